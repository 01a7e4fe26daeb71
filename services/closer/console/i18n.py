"""Console strings: Chinese first (zh-CN), English on request."""

from __future__ import annotations

from schemas.thanks import PRESETS
from services.closer.transitions import REJECT_REASONS, RETURN_REASONS

LANGS = ("zh", "en")

_T: dict[str, tuple[str, str]] = {
    "app": ("网格工作台", "Grid console"),
    "overview": ("运行总览", "Overview"),
    "updated": ("更新于", "Updated"),
    "reports_today": ("今日上报", "Reports today"),
    "opened_today": ("今日立案", "Opened today"),
    "closed_today": ("今日结案", "Closed today"),
    "open_now": ("在办", "Open"),
    "red_now": ("超期", "Overdue"),
    "stations": ("各站点", "Stations"),
    "grid_map": ("网格地图", "Grid map"),
    "intake_per_hour": ("近24小时每小时上报", "Reports per hour, last 24 h"),
    "time_to_close": ("近7天结案用时（中位数，小时）", "Time to close, last 7 days (median, hours)"),
    "none_closed": ("近7天没有结案", "Nothing closed in the last 7 days"),
    "sign_in": ("登录", "Sign in"),
    "sign_out": ("退出", "Sign out"),
    "calendar_estimated": (
        "{year} 年工作日历仅为估算（尚无国务院办公厅放假安排）：发布后请用 gridloop calendar import 导入。",
        "The {year} working calendar is only estimated (no State Council schedule yet):"
        " import it with gridloop calendar import once it is published.",
    ),
    "username": ("账号", "Username"),
    "password": ("密码", "Password"),
    "queue": ("案件队列", "Queue"),
    "triage": ("待分拨", "Triage"),
    "returns": ("退单裁决", "Returns"),
    "extensions": ("延期审批", "Extensions"),
    "supervision": ("督办", "Supervision"),
    "common": ("共性问题", "Common issues"),
    "duty": ("值班", "On duty"),
    "on_duty_now": ("当前值班", "On duty now"),
    "duty_roster": ("值班表", "roster"),
    "duty_centre": ("无排班，城运中心值班", "no roster: the operations centre"),
    "duty_until": ("至", "until"),
    "duty_roster_title": ("值班表", "Duty roster"),
    "duty_add": ("添加班次", "Add a shift"),
    "duty_upload": ("导入 CSV", "Upload CSV"),
    "roster_refused": ("未保存任何班次：", "Nothing was saved:"),
    "remove": ("删除", "Remove"),
    "street": ("街道", "Street"),
    "date": ("日期", "Date"),
    "export": ("导出", "Export"),
    "export_csv": ("导出 CSV", "Export CSV"),
    "from": ("起", "From"),
    "to": ("止", "To"),
    "filter": ("筛选", "Filter"),
    "all_states": ("全部在办", "All open"),
    "all": ("全部", "All"),
    "all_categories": ("全部类别", "All categories"),
    "all_stations": ("全部站点", "All stations"),
    "station": ("站点", "Station"),
    "status": ("状态", "Status"),
    "category": ("类别", "Category"),
    "place": ("地点", "Place"),
    "due": ("时限", "Due"),
    "case": ("案件", "Case"),
    "riders": ("骑手", "Riders"),
    "none": ("暂无案件", "No cases"),
    "more": ("更多", "More"),
    "bulk_ack": ("批量签收", "Sign for selected"),
    "bulk_confirm": ("确认签收所选案件", "Confirm: sign for the selected cases"),
    "select_all": ("全选新案件", "Select all new"),
    "live": ("实时", "Live"),
    "new_case": ("有新案件", "New case"),
    "red": ("超期", "Overdue"),
    "yellow": ("临期", "Due soon"),
    "green": ("正常", "On time"),
    "description": ("描述", "Description"),
    "submitted": ("上报时间", "Reported"),
    "ack_due": ("签收时限", "Sign-for due"),
    "resolve_due": ("办结时限", "Resolve due"),
    "clock": ("计时方式", "SLA clock"),
    "clock_working": ("工作时间", "Working hours"),
    "clock_calendar": ("24 小时处置", "Around the clock (24 h)"),
    "assignee": ("处置人", "Assignee"),
    "priority": ("优先级", "Priority"),
    "moves": ("退单/转派次数", "Returns and transfers"),
    "extensions_granted": ("已批延期", "Extensions granted"),
    "pending_ext": ("待批延期(小时)", "Pending extension (hours)"),
    "rating": ("骑手评分", "Rider rating"),
    "map": ("位置", "Location"),
    "photos": ("照片", "Photos"),
    "after_photos": ("处置后照片", "After-photos"),
    "rider_photos": ("上报照片", "Reported photos"),
    "reports": ("上报骑手", "Riders' reports"),
    "timeline": ("办理经过", "Timeline"),
    "actions": ("可办操作", "Actions"),
    "no_actions": ("当前无可办操作", "No action possible now"),
    "note": ("说明", "Note"),
    "reason": ("原因", "Reason"),
    "to_station": ("目标站点", "To station"),
    "hours": ("延期工作小时", "Extra working hours"),
    "photo": ("处置后照片", "After-photo"),
    "photo_needed": ("(本类别必须上传)", "(required for this category)"),
    "confirm": ("确认", "Confirm"),
    "back": ("返回队列", "Back to the queue"),
    "done": ("已完成", "Done"),
    "error": ("未能完成", "Could not do that"),
    "common_issue": ("共性问题", "Common issue"),
    "danger": ("紧急危险", "Danger now"),
    "supervised": ("督办", "Supervised"),
    "triage_flag": ("待分拨", "Needs triage"),
    "version": ("版本", "Version"),
    "lang_switch": ("English", "中文"),
    "keys": ("快捷键:j/k 上下移动,Enter 打开,/ 筛选", "Keys: j/k move, Enter opens, / filters"),
    "forbidden": ("只有城运中心督办人员可以查看此页。", "Only the centre's supervisors see this page."),
    "login_failed": ("账号或密码错误。", "Wrong username or password."),
    "locked": ("失败次数过多,请稍后再试。", "Too many failed logins; try again later."),
    "stale": ("表单已过期,请重新操作。", "The form is stale; try again."),
    "counts": ("在办统计", "Open cases"),
    "not_found": ("没有这个案件。", "No such case."),
    "conversation": ("沟通记录", "Conversation"),
    "notifications": ("通知", "Notifications"),
    "notifications_title": ("发送失败的通知", "Failed notifications"),
    "notify_intro": (
        "这些通知重试多次仍未发出。先修好渠道（机器人 key、邮箱），再点「重试」。渠道中的密钥已隐藏。",
        "These notifications were tried several times and never went. Fix the channel (robot key,"
        " mailbox) first, then retry. Channel secrets are hidden.",
    ),
    "notify_none": ("没有发送失败的通知。", "No failed notifications."),
    "notify_down": (
        "通知服务暂时无法连接（503），请稍后刷新此页。",
        "The notifier cannot be reached (503); reload this page later.",
    ),
    "notify_retried": ("已重新排队发送，通知服务马上会再试。", "Queued again: the notifier tries it now."),
    "notify_not_failed": (
        "这条通知已不在失败列表中（可能已被重试）。",
        "That notification is no longer failed (perhaps already retried).",
    ),
    "notify_not_found": ("没有这条通知。", "No such notification."),
    "notify_refused": ("通知服务拒绝了请求", "The notifier refused"),
    "notify_admins_only": ("只有管理员可以重试通知。", "Only admins retry notifications."),
    "channel_kind": ("渠道类型", "Channel kind"),
    "channel": ("渠道", "Channel"),
    "event_type": ("事件", "Event"),
    "attempts": ("尝试次数", "Attempts"),
    "last_error": ("最后的错误", "Last error"),
    "event_time": ("事件时间", "Event time"),
    "retry": ("重试", "Retry"),
    "no_messages": ("暂无沟通记录", "Nothing written yet"),
    "write": ("写一条", "Write"),
    "kind": ("类型", "Kind"),
    "kind_note": ("内部备注(骑手看不到)", "Internal note (riders never see it)"),
    "kind_public": ("公开进展(骑手可见)", "Public update (riders see it)"),
    "kind_question": ("向骑手提问(骑手可见)", "Question to the riders (they see it)"),
    "kind_reply": ("骑手回复", "Rider's reply"),
    "kind_nudge": ("骑手催办", "Rider's nudge (催办)"),
    "text": ("内容", "Text"),
    "send": ("发送", "Send"),
    "nudges": ("催办次数", "Nudges (催办)"),
    "answers": ("回答", "Answers"),
    # issue 17: staff thank the riders (致谢)
    "thanks": ("致谢骑手", "Thank the riders"),
    "thanks_hint": (
        "每个案件可致谢一次，案件的所有上报骑手都会在自己的跟踪页看到。",
        "Once per case: every rider who reported it sees it on their own tracking page.",
    ),
    "thanks_preset": ("致谢语", "Message"),
    "thanks_text": ("补充一句(可选，最多200字)", "Add a few words (optional, at most 200 characters)"),
    "thanks_send": ("发送致谢", "Send the thank-you"),
    "thanks_none": ("未致谢", "Not thanked"),
    **{f"thanks_{key}": pair for key, pair in PRESETS.items()},
}

STATES: dict[str, tuple[str, str]] = {
    "new": ("待签收", "New"),
    "acknowledged": ("已签收", "Signed for"),
    "dispatched": ("处置中", "Dispatched"),
    "resolved": ("已办结", "Resolved"),
    "closed": ("已结案", "Closed"),
    "returned": ("已退单", "Returned"),
    "on_hold": ("挂账", "On hold"),
    "rejected": ("已驳回", "Rejected"),
}

ACTIONS: dict[str, tuple[str, str]] = {
    "opened": ("立案", "Opened"),
    "triage": ("分拨", "Triage to a station"),
    "report_merged": ("合并上报", "Report merged"),
    "acknowledge": ("签收", "Sign for"),
    "dispatch": ("派遣", "Dispatch"),
    "resolve": ("办结", "Resolve"),
    "return": ("退单", "Return"),
    "transfer": ("转派", "Transfer"),
    "request_extension": ("申请延期", "Request extension"),
    "approve_extension": ("批准延期", "Approve extension"),
    "deny_extension": ("驳回延期", "Deny extension"),
    "reassign": ("改派", "Reassign"),
    "send_back": ("退回原站", "Send back"),
    "hold": ("挂账", "Put on hold"),
    "release": ("解除挂账", "Release hold"),
    "replan": ("工作日历更新，期限重算", "Calendar changed: deadlines re-planned"),
    "reject": ("驳回案件", "Reject"),
    "escalate": ("超期督办", "Escalated"),
    "confirm": ("骑手确认解决", "Rider confirmed"),
    "auto_close": ("自动结案", "Closed automatically"),
    "reopen": ("骑手反馈未解决", "Reopened by the rider"),
    "feedback": ("骑手反馈", "Rider feedback"),
    "comment": ("内部备注", "Internal note"),
    "update_public": ("公开进展", "Public update"),
    "ask": ("向骑手提问", "Question to the riders"),
    "rider_reply": ("骑手回复", "Rider replied"),
    "nudge": ("骑手催办", "Rider nudged (催办)"),
    "say_note": ("内部备注", "Internal note"),
    "say_public": ("公开进展", "Public update"),
    "say_question": ("向骑手提问", "Question to the riders"),
    # issue 17
    "thank_riders": ("致谢骑手", "Riders thanked"),
}

PRIORITIES: dict[str, tuple[str, str]] = {
    "normal": ("一般", "Normal"),
    "high": ("较急", "High"),
    "urgent": ("紧急", "Urgent"),
}


class Translator:
    """Strings of one language."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGS else "zh"
        self.i = 0 if self.lang == "zh" else 1

    def __call__(self, key: str) -> str:
        """A console string."""
        pair = _T.get(key)
        return pair[self.i] if pair else key

    def state(self, key: str) -> str:
        """A state's name."""
        return STATES.get(key, (key, key))[self.i]

    def action(self, key: str) -> str:
        """An action's name."""
        return ACTIONS.get(key, (key, key))[self.i]

    def priority(self, key: str) -> str:
        """A priority's name."""
        return PRIORITIES.get(key, (key, key))[self.i]

    def reason(self, key: str | None) -> str:
        """A return or reject reason's name."""
        if not key:
            return ""
        pair = RETURN_REASONS.get(key) or REJECT_REASONS.get(key)
        return pair[self.i] if pair else key
