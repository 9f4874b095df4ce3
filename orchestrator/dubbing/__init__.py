"""Dubbing a talking video (lipsync-video), split by responsibility:

- `tracking`: decode the source once into a scratch frame store while tracking the face;
- `timeline`: which source frame each output frame shows (`sync_mode`), and how much of the
  source needs tracking;
- `references`: the person's own mouth library and the source frame whose mouth each output
  frame shows (Video Rewrite re-synthesis), opened wider where the speech asks for more than
  the library shows, or a parametric mouth where none fits;
- `render`: transplant (or render) the mouths at the source's own resolution, paste, encode.
"""
from orchestrator.dubbing.references import (
    PARAMETRIC,
    MouthChoice,
    choose_mouths,
    choose_references,
    library_sample,
    shown_opening,
    source_library,
)
from orchestrator.dubbing.render import render_dub
from orchestrator.dubbing.timeline import LIBRARY_MIN_FRAMES, SYNC_MODES, frames_to_track, timeline
from orchestrator.dubbing.tracking import TRACK_BATCH, SourceVideo, track_video

__all__ = ["LIBRARY_MIN_FRAMES", "PARAMETRIC", "SYNC_MODES", "TRACK_BATCH", "MouthChoice", "SourceVideo",
           "choose_mouths", "choose_references",
           "frames_to_track", "library_sample", "render_dub", "shown_opening", "source_library", "timeline",
           "track_video"]
