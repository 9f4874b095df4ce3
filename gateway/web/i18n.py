"""The dashboard's two languages: English (the source strings) and Arabic (right to left).
The language comes from the `lipsyncd_lang` cookie (the switch), else from Accept-Language."""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

LANG_COOKIE = "lipsyncd_lang"
LANGUAGES = ("en", "ar")

# Longer texts are looked up by a key; everything else by its English words.
ENGLISH: dict[str, str] = {
    "resolution_refusal": "The {plan} plan's top resolution is {max}: a job that asks for more"
        " (for example \"resolution\": \"720p\") is refused with HTTP 403,"
        " error_code \"resolution_not_allowed\", and nothing is charged.",
    "webhook_secret_help": "Receivers check each delivery's webhook-signature header with this"
        " secret (Standard Webhooks). A job is signed with the secret the account had when the"
        " job was submitted, so after a rotation, jobs already running still use the old one.",
    "test_event_help": "Sends a signed test event (type \"test\") to this URL now, from the"
        " gateway, and records the answer below. The URL is also kept as your default for the"
        " Playground.",
    "throttled": "Too many attempts. Try again in {minutes} min.",
}

ARABIC: dict[str, str] = {
    "resolution_refusal": "أعلى دقة في خطة {plan} هي {max}: المهمة التي تطلب أكثر"
        " (مثلًا \"resolution\": \"720p\") ترفض برمز HTTP 403"
        " و error_code \"resolution_not_allowed\"، ولا يخصم شيء.",
    "webhook_secret_help": "يتحقق المستقبل من ترويسة webhook-signature لكل تسليم بهذا السر"
        " (Standard Webhooks). توقع المهمة بالسر الذي كان للحساب عند إرسالها، لذا تستمر المهام"
        " الجارية في استخدام السر القديم بعد التدوير.",
    "test_event_help": "يرسل حدثًا تجريبيًا موقعًا (النوع \"test\") إلى هذا الرابط الآن من"
        " البوابة ويسجل الرد أدناه. ويحفظ الرابط كرابطك الافتراضي في صفحة التجربة.",
    "Dashboard": "لوحة التحكم",
    "API keys": "مفاتيح API",
    "Credits": "الأرصدة",
    "Jobs": "المهام",
    "Playground": "التجربة",
    "Webhooks": "الويب هوك",
    "Quickstart": "البدء السريع",
    "API reference": "مرجع API",
    "Log in": "تسجيل الدخول",
    "Log out": "تسجيل الخروج",
    "Sign up": "إنشاء حساب",
    "Email": "البريد الإلكتروني",
    "Password": "كلمة المرور",
    "Password (at least 8 characters)": "كلمة المرور (8 أحرف على الأقل)",
    "No account yet?": "ليس لديك حساب؟",
    "Already have an account?": "لديك حساب بالفعل؟",
    "Invalid email or password": "البريد الإلكتروني أو كلمة المرور غير صحيحة",
    "An account with this email already exists": "يوجد حساب بهذا البريد الإلكتروني",
    "Enter a valid email address": "أدخل بريدًا إلكترونيًا صالحًا",
    "The password must have at least 8 characters": "يجب أن تتكون كلمة المرور من 8 أحرف على الأقل",
    "Too many login attempts; wait a minute": "محاولات دخول كثيرة؛ انتظر دقيقة",
    "throttled": "محاولات كثيرة. حاول مرة أخرى بعد {minutes} دقيقة.",
    "Language": "اللغة",
    "Signed in as": "مسجل الدخول باسم",
    "Create a key": "إنشاء مفتاح",
    "Name (optional)": "الاسم (اختياري)",
    "Your new API key": "مفتاح API الجديد",
    "Copy": "نسخ",
    "Copied": "تم النسخ",
    "This is the only time the full key is shown. Store it somewhere safe now.":
        "هذه هي المرة الوحيدة التي يظهر فيها المفتاح كاملًا. احفظه في مكان آمن الآن.",
    "Name": "الاسم",
    "Prefix": "البادئة",
    "Created": "أنشئ",
    "Last used": "آخر استخدام",
    "Status": "الحالة",
    "Never": "أبدًا",
    "Active": "نشط",
    "Revoked": "ملغى",
    "Revoke": "إلغاء",
    "Revoke this key? Calls with it will be refused at once.":
        "إلغاء هذا المفتاح؟ سترفض الطلبات التي تستخدمه فورًا.",
    "No keys yet.": "لا توجد مفاتيح بعد.",
    "API credits": "أرصدة API",
    "App credits": "أرصدة التطبيق",
    "Credits and plans": "الأرصدة والخطط",
    "API credits pay for jobs submitted with an API key; app credits pay for jobs started here in the dashboard. The two balances are separate and cannot be exchanged.":
        "أرصدة API تدفع ثمن المهام المرسلة بمفتاح API، وأرصدة التطبيق تدفع ثمن المهام التي تبدأ هنا في لوحة التحكم. الرصيدان منفصلان ولا يمكن تبادلهما.",
    "Credits spent per day, last 30 days": "الأرصدة المنفقة يوميًا، آخر 30 يومًا",
    "Ledger": "السجل",
    "Kind": "النوع",
    "Balance": "الرصيد",
    "Change": "التغيير",
    "Job": "المهمة",
    "When": "الوقت",
    "Plans": "الخطط",
    "Plan": "الخطة",
    "your plan": "خطتك",
    "API credits granted": "أرصدة API الممنوحة",
    "App credits granted": "أرصدة التطبيق الممنوحة",
    "Jobs at a time": "مهام في وقت واحد",
    "Requests per minute": "طلبات في الدقيقة",
    "Top resolution": "أعلى دقة",
    "Price": "السعر",
    "credits per second of output": "رصيد لكل ثانية من الناتج",
    "minimum billed": "الحد الأدنى للفوترة",
    "Model": "النموذج",
    "Progress": "التقدم",
    "Stage": "المرحلة",
    "No jobs yet.": "لا توجد مهام بعد.",
    "Download": "تنزيل",
    "Delete output": "حذف الناتج",
    "Delete this output? The video file is removed for good.":
        "حذف هذا الناتج؟ سيحذف ملف الفيديو نهائيًا.",
    "Output deleted": "تم حذف الناتج",
    "Error": "الخطأ",
    "Cancel": "إلغاء المهمة",
    "Submit": "إرسال",
    "Mode": "الوضع",
    "Resolution": "الدقة",
    "Seed": "البذرة",
    "Prompt": "الوصف",
    "Sync mode": "وضع المزامنة",
    "Order": "الترتيب",
    "Image": "الصورة",
    "Video": "الفيديو",
    "Audio": "الصوت",
    "Left voice": "الصوت الأيسر",
    "Right voice": "الصوت الأيمن",
    "or a URL": "أو رابط",
    "Jobs started here spend app credits.": "المهام التي تبدأ هنا تستهلك أرصدة التطبيق.",
    "Signing secret": "سر التوقيع",
    "Reveal": "إظهار",
    "Rotate": "تدوير",
    "Rotate the secret? Receivers must switch to the new one.":
        "تدوير السر؟ يجب أن يستخدم المستقبلون السر الجديد.",
    "Send test event": "إرسال حدث تجريبي",
    "Webhook URL": "رابط الويب هوك",
    "Recent deliveries": "آخر عمليات التسليم",
    "No deliveries yet.": "لا توجد عمليات تسليم بعد.",
    "Attempt": "المحاولة",
    "Result": "النتيجة",
    "Event": "الحدث",
    "Not found": "غير موجود",
    "Forbidden": "ممنوع",
    "The form expired or did not come from this page. Reload the page and try again.":
        "انتهت صلاحية النموذج أو لم يأت من هذه الصفحة. أعد تحميل الصفحة وحاول مرة أخرى.",
    "processing": "قيد المعالجة",
    "completed": "مكتملة",
    "failed": "فشلت",
    "canceled": "ألغيت",
    "Main navigation": "التنقل الرئيسي",
    "Processing time": "مدة المعالجة",
    "file": "ملف",
    "Sign-up is closed on this server; ask its operator for an account.":
        "إنشاء الحسابات مغلق على هذا الخادم؛ اطلب حسابًا من المشغل.",
    "grant": "منحة",
    "reserve": "حجز",
    "reserve_raise": "رفع الحجز",
    "capture": "خصم نهائي",
    "release": "إرجاع",
    "Link expires": "ينتهي الرابط",
    "Expired": "انتهت الصلاحية",
    "The output expired and was deleted.": "انتهت صلاحية الناتج وحُذف.",
}


@dataclass(frozen=True)
class Locale:
    lang: str

    @property
    def dir(self) -> str:
        return "rtl" if self.lang == "ar" else "ltr"

    def gettext(self, text: str) -> str:
        table = ARABIC if self.lang == "ar" else ENGLISH
        return table.get(text) or ENGLISH.get(text, text)


def _from_accept_language(header: str) -> str:
    ranked: list[tuple[float, str]] = []
    for part in header.split(","):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((quality, tag.split("-")[0].lower()))
    for _, lang in sorted(ranked, key=lambda item: -item[0]):
        if lang in LANGUAGES:
            return lang
    return "en"


def locale_for(request: Request) -> Locale:
    chosen = request.cookies.get(LANG_COOKIE, "")
    if chosen in LANGUAGES:
        return Locale(chosen)
    return Locale(_from_accept_language(request.headers.get("accept-language", "")))
