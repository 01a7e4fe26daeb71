"""What riders read, in plain Chinese first and English second: statuses, timeline steps, page text."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

LANGS = ("zh", "en")
SHANGHAI = timezone(timedelta(hours=8), "CST")

STATUS: dict[str, tuple[str, str]] = {
    "received": ("已提交，等待受理", "Sent, waiting to be taken up"),
    "new": ("已受理，等待网格站签收", "Taken up, waiting for the grid station"),
    "acknowledged": ("已签收", "Signed for by the grid station"),
    "dispatched": ("处置中", "Being fixed"),
    "resolved": ("已办结，请您确认", "Fixed: please confirm"),
    "closed": ("已结案", "Closed"),
    "returned": ("退单复核中", "Being re-assigned"),
    "on_hold": ("挂账，长期处理", "On hold for a long-term fix"),
    "rejected": ("未受理", "Not taken up"),
}

ACTION: dict[str, tuple[str, str]] = {
    "submitted": ("您提交了报告", "You sent the report"),
    "opened": ("已受理（立案）", "Taken up (case opened)"),
    "merged": ("已受理，与其他骑手的报告合并处理", "Taken up with other riders' reports of the same issue"),
    "acknowledged": ("网格站已签收", "Signed for by the grid station"),
    "acknowledge": ("网格站已签收", "Signed for by the grid station"),
    "dispatched": ("已派人处置", "Someone is on the way"),
    "dispatch": ("已派人处置", "Someone is on the way"),
    "resolved": ("已办结", "Fixed"),
    "resolve": ("已办结", "Fixed"),
    "closed": ("已结案", "Closed"),
    "close": ("已结案", "Closed"),
    "returned": ("退单，城运中心重新分派", "Returned; the centre re-assigns it"),
    "return": ("退单，城运中心重新分派", "Returned; the centre re-assigns it"),
    "transferred": ("已转交其他网格站", "Passed to another grid station"),
    "transfer": ("已转交其他网格站", "Passed to another grid station"),
    "on_hold": ("挂账，长期处理", "On hold for a long-term fix"),
    "hold": ("挂账，长期处理", "On hold for a long-term fix"),
    "reopened": ("重新处置", "Reopened"),
    "reopen": ("重新处置", "Reopened"),
    "rejected": ("未受理", "Not taken up"),
    "reject": ("未受理", "Not taken up"),
    "escalated": ("已督办", "Escalated by the centre"),
    "escalate": ("已督办", "Escalated by the centre"),
    "extension_requested": ("网格站申请延期", "The station asked for more time"),
    "extension_decided": ("延期申请已审批", "Extension decided"),
    "confirm": ("您确认修好，已结案", "Closed: you confirmed the fix"),
    "auto_close": ("超过确认期限，自动结案", "Closed automatically (no answer in time)"),
    "approve_extension": ("延期申请已批准", "More time granted"),
    "deny_extension": ("延期申请未批准", "More time refused"),
    "request_extension": ("网格站申请延期", "The station asked for more time"),
    "reassign": ("城运中心重新分派", "Re-assigned by the centre"),
    "send_back": ("退回网格站继续处置", "Sent back to the grid station"),
    "triage": ("城运中心已分派", "Assigned by the centre"),
    "released": ("恢复处置", "Back in progress"),
    "release": ("恢复处置", "Back in progress"),
    "replanned": ("放假安排公布，处理期限已重算", "Holiday schedule published: deadlines re-planned"),
    "replan": ("放假安排公布，处理期限已重算", "Holiday schedule published: deadlines re-planned"),
    "on_duty": ("非工作时间，已转值班人员处置", "Out of hours: passed to the team on duty"),
    "rider_reply": ("您补充了信息", "You added details"),
    "nudge": ("您催办了一次", "You asked them to hurry (催办)"),
    "feedback_fixed": ("您确认已修好", "You confirmed the fix"),
    "feedback_not_fixed": ("您反馈没修好", "You said it is not fixed"),
}

TEXT: dict[str, tuple[str, str]] = {
    "title_report": ("随手报", "Report an issue"),
    "you_are_at": ("您在", "You are at"),
    "station": ("负责", "Handled by"),
    "what": ("遇到什么问题？", "What is wrong?"),
    "words": ("补充说明（可不填）", "A few words (optional)"),
    "photos": ("拍照（最多 3 张，可不拍）", "Photos (up to 3, optional)"),
    "add_photo": ("📷 拍照/选图", "📷 Add photo"),
    "danger": ("有危险，需要马上处理", "Danger now: needs action at once"),
    "more": ("骑手信息（可不填）", "About you (optional)"),
    "platform": ("平台", "Platform"),
    "rider_no": ("骑手编号", "Rider number"),
    "send": ("发送", "Send"),
    "sending": ("正在发送…", "Sending…"),
    "pick_category": ("请先选择问题类型", "Pick what is wrong first"),
    "already": ("已有人报告", "Already reported"),
    "plus_one": ("+1 我也遇到", "+1 me too"),
    "plus_one_hint": (
        "点 +1 加入已有案件，不用重复报告",
        "Tap +1 to join the open case instead of a new report",
    ),
    "ago_min": ("{n} 分钟前", "{n} min ago"),
    "ago_hour": ("{n} 小时前", "{n} h ago"),
    "ago_day": ("{n} 天前", "{n} days ago"),
    "just_now": ("刚刚", "just now"),
    "riders": ("{n} 位骑手", "{n} riders"),
    "received": ("已收到，谢谢！", "Received, thank you!"),
    "receipt_no": ("回执编号", "Receipt number"),
    "track": ("查看进度", "Track progress"),
    "my_reports": ("我的报告", "My reports"),
    "offline_saved": (
        "没有网络：报告已保存在手机上，联网后会自动发送。",
        "No network: the report is saved on this phone and will be sent when you are back online.",
    ),
    "offline_pending": ("{n} 条报告等待联网发送", "{n} report(s) waiting for the network"),
    "error": ("发送失败", "Could not send"),
    "retry_later": ("请稍后再试", "Please try again later"),
    "lang_switch": ("English", "中文"),
    "photo_removed": ("删除", "remove"),
    "too_long": ("最多 500 字", "At most 500 characters"),
    "track_title": ("报告进度", "Report progress"),
    "status": ("当前状态", "Status"),
    "timeline": ("处理过程", "Timeline"),
    "after_photo": ("处置后照片", "After the fix"),
    "your_photos": ("您的照片", "Your photos"),
    "your_words": ("您的说明", "Your words"),
    "confirm_q": ("问题解决了吗？", "Is it fixed?"),
    "fixed_yes": ("✅ 已修好", "✅ Fixed"),
    "fixed_no": ("❌ 没修好", "❌ Not fixed"),
    "rate": ("评价（1–5 星）", "Rating (1–5 stars)"),
    "comment": ("说明（没修好时必填）", "Comment (required if not fixed)"),
    "comment_required": ("没修好时请写明原因", "Please say what is still wrong"),
    "thanks_feedback": ("谢谢您的反馈！", "Thank you for your feedback!"),
    "feedback_given": ("您已反馈", "You answered"),
    "expected": ("预计办结", "Expected by"),
    "round_the_clock": ("24 小时处置", "Handled around the clock"),
    "agency": ("负责单位", "Handled by"),
    "no_reports": ("这台手机还没有报告。", "No reports from this phone yet."),
    "manual_title": ("输入报告码", "Enter the report code"),
    "manual_hint": (
        "二维码看不清？输入牌子上的 8 位报告码。",
        "QR code damaged? Type the 8-character code printed under it.",
    ),
    "go": ("打开", "Open"),
    "or": ("或者", "or"),
    "use_location": ("📍 用我的位置报告", "📍 Report at my location"),
    "locating": ("正在定位…", "Finding your location…"),
    "location_failed": ("无法定位，请输入报告码", "Could not find your location; enter the code"),
    "your_location": ("您的位置", "Your location"),
    "outside": ("不在已知网格内，将由城运中心分派", "Outside the known grids; the centre will assign it"),
    "deactivated_title": ("这个报告码已停用", "This report code is no longer in use"),
    "deactivated_hint": (
        "牌子可能已更换。请用新的报告码，或用您的位置报告。",
        "The sign may have been replaced. Use the new code, or report at your location.",
    ),
    "replaced_by": ("新的报告码", "The new code"),
    "unknown_title": ("没有这个报告码", "No place has this code"),
    "check_title": ("请核对报告码", "Check the code"),
    "check_hint": ("有字符可能输错了。", "One character looks mistyped."),
    "not_found": ("没有找到这份报告", "No such report"),
    "rate_limited": ("发送太频繁，请 {n} 秒后再试", "Too many reports; try again in {n} s"),
    "updates": ("网格站的消息", "From the grid station"),
    "update_public": ("进展", "Update"),
    "question": ("网格站想问您", "The station asks you"),
    "answer": ("回答 / 补充", "Answer / add details"),
    "your_reply": ("您的回复", "Your reply"),
    "send_reply": ("发送", "Send"),
    "reply_sent": ("已发送，谢谢！", "Sent, thank you!"),
    "reply_empty": ("请写几个字或添加照片", "Write something or add a photo"),
    "nudge_btn": ("⏰ 催办", "⏰ Hurry them up (催办)"),
    "nudge_hint": ("每份报告 24 小时内可催办一次", "One nudge per report every 24 hours"),
    "nudge_sent": ("已催办，城运中心会督办此事", "Sent: the centre will follow it up"),
    "nudge_wait": ("24 小时内已催办过，请稍后再试", "Already nudged in the last 24 hours; try later"),
    "nudge_next": ("下次可催办时间", "Next nudge possible at"),
    "notify_me": ("🔔 有进展通知我", "🔔 Tell me when it moves"),
    "notify_on": ("已开启进展通知", "You will be notified"),
    "notify_off": ("关闭通知", "Stop notifications"),
    "notify_stopped": ("已关闭通知", "Notifications stopped"),
    "notify_unsupported": ("此浏览器不支持通知", "This browser cannot show notifications"),
    "notify_denied": ("通知权限未开启", "Notifications are not allowed for this site"),
    "push_title": ("随手报有进展", "Your report has news"),
    "push_acknowledged": ("网格站已签收您的报告", "The grid station signed for your report"),
    "push_resolved": ("已处理，请确认是否修好", "It has been fixed: please confirm"),
    "push_closed": ("您的报告已结案，谢谢！", "Your report is closed. Thank you!"),
    "push_updated_public": ("网格站发布了处理进展", "The grid station posted an update"),
    "push_question_asked": ("网格站有问题想问您，请回复", "The grid station has a question for you"),
    # topics (议题): the case is part of an area-level common issue taken to a meeting
    "topic": ("共性问题议题", "Common issue taken up"),
    "topic_hint": (
        "附近多位骑手反映了同类问题，街道把它作为议题统一处理。",
        "Several riders reported this nearby; the street is taking it up as one issue.",
    ),
    "topic_body": ("承办", "Taken up by"),
    "topic_meeting": ("专题会议", "Meeting"),
    "topic_follow_up": ("跟进期限", "Follow-up by"),
    "topic_outcome": ("议题结论", "Outcome"),
    "topic_open": ("处理中", "In progress"),
    # issue 17: riders recognised
    "push_thanked": ("街道感谢您的上报！", "The street thanks you for your report!"),
    "thanks_title": ("街道致谢", "Thank you from the street"),
    "my_contributions": ("我的贡献", "My contributions"),
    "my_reports_n": ("上报", "Reports"),
    "my_fixed_n": ("已解决", "Fixed"),
    "my_thanks_n": ("收到致谢", "Thanks received"),
    "recognition_code": ("骑手识别码", "Recognition code"),
    "recognition_hint": (
        "表彰时向街道或平台出示此码即可，无需提供姓名、电话或骑手编号。",
        "Show this code to the street or your platform to be recognised (表彰): "
        "no name, phone or rider number needed.",
    ),
}


def lang_of(value: str | None) -> str:
    """A supported language from a query, cookie or header value (zh when in doubt)."""
    return "en" if value and value.lower().startswith("en") else "zh"


def t(key: str, lang: str, **values: object) -> str:
    """One page text in a language."""
    zh, en = TEXT[key]
    text = en if lang == "en" else zh
    return text.format(**values) if values else text


def status_text(status: str, lang: str) -> str:
    """A status in plain words."""
    zh, en = STATUS.get(status, (status, status))
    return en if lang == "en" else zh


def action_text(action: str, lang: str) -> str:
    """A timeline step in plain words."""
    zh, en = ACTION.get(action, (action, action))
    return en if lang == "en" else zh


def local_time(value: datetime, lang: str) -> str:
    """A time as riders read it: Shanghai time, month-day hour:minute."""
    local = value.astimezone(SHANGHAI)
    if lang == "en":
        return local.strftime("%d %b %H:%M")
    return f"{local.month}月{local.day}日 {local:%H:%M}"


def ago(then: datetime, now: datetime, lang: str) -> str:
    """How long ago, roughly ("2 小时前")."""
    minutes = int((now - then).total_seconds() // 60)
    if minutes < 1:
        return t("just_now", lang)
    if minutes < 60:
        return t("ago_min", lang, n=minutes)
    if minutes < 48 * 60:
        return t("ago_hour", lang, n=minutes // 60)
    return t("ago_day", lang, n=minutes // 1440)
