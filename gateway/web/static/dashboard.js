// The dashboard's only script: copy buttons, confirmations, and live job status (polls a
// small JSON answer every 2 s and reloads the page once a job has finished).
(function () {
  document.querySelectorAll("button.copy").forEach(function (button) {
    button.addEventListener("click", function () {
      var field = document.getElementById(button.dataset.copy);
      var done = function () { button.textContent = button.dataset.done; };
      field.select();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done, function () {
          document.execCommand("copy"); done();
        });
      } else {
        document.execCommand("copy"); done();
      }
    });
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
    });
  });
  var rows = document.querySelectorAll("[data-poll]");
  if (!rows.length) { return; }
  var timer = setInterval(function () {
    var pending = 0;
    rows.forEach(function (row) {
      if (row.dataset.status !== "processing") { return; }
      pending += 1;
      fetch(row.dataset.poll, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (job) {
          if (!job) { return; }
          var progress = row.querySelector("progress");
          if (progress) { progress.value = job.progress; }
          var stage = row.querySelector("[data-stage]");
          if (stage) { stage.textContent = job.stage_label; }
          if (job.status !== "processing") {
            row.dataset.status = job.status;
            window.location.reload();
          }
        });
    });
    if (!pending) { clearInterval(timer); }
  }, 2000);
})();
