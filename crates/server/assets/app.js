// medkeeper dashboard: plain JS, no framework, no library. Live through one Server-Sent Events
// stream (/api/events: pools, cluster, alarms), never polling. Every piece of data is inserted
// with textContent / createElement, never as HTML; no inline script or handler anywhere, so a
// Content-Security-Policy of `script-src 'self'` holds. Styles are set through the CSSOM.
"use strict";
window.__loadCount = (window.__loadCount || 0) + 1;

(function () {
  const TOKEN_KEY = "medkeeper.token";
  const LANG_KEY = "medkeeper.lang";
  const TAB_KEY = "medkeeper.tab";
  const streams = [];
  let token = null;
  let me = null;

  // ---------- languages ----------
  // Every string the page shows. A value is a string ({0}, {1} are replaced) or a function of
  // the arguments (plurals, word order). zh-CN has every key en has (the test checks).
  const STRINGS = {
    en: {
      "lang.name": "English",
      "lang.label": "Language",
      "skip": "Skip to content",
      "signin.title": "Sign in",
      "signin.hint": "Paste the access token you were given (it starts with mkt_).",
      "signin.label": "Access token",
      "signin.submit": "Open dashboard",
      "signin.bad": "A token looks like mkt_ followed by hex digits.",
      "signout": "Sign out",
      "noscript": "The medkeeper dashboard needs JavaScript.",
      "who.patient": "Patient",
      "who.staff": (r) => "Signed in as " + r,
      "tz.label": "Time zone",
      "tz.hospital": (z) => "Times in " + z + ", the hospital's time zone",
      "tz.device": (z) => "Times in " + z + ", this device's time zone (the hospital file names none)",
      "tz.unknown": (z, hz) => "Times in " + z + ", this device's time zone: this browser does not know the hospital's, " + hz,
      "role.admin": "admin", "role.scheduler": "scheduler", "role.doctor": "doctor",
      "role.nurse": "nurse", "role.technician": "technician", "role.patient": "patient",
      "tabs.label": "Views",
      "tab.ward": "Ward", "tab.orders": "Orders", "tab.units": "Units", "tab.charts": "Charts", "tab.admin": "Admin",
      "view.ward": "Ward: alarms, units and queues",
      "view.orders": "Patients and orders",
      "view.units": "Units at work",
      "view.charts": "Utilisation and waiting times",
      "view.admin": "Administration",
      "view.patient": "My exams",
      "live.connecting": "connecting", "live.live": "live", "live.reconnecting": "reconnecting",
      "live.offline": "offline, retrying", "live.events": "event stream", "live.patient": "patient stream",
      "loading": "Loading…", "loading.pools": "Loading pools…", "loading.queue": "Loading queue…",
      "err.network": (m) => "cannot reach the server (" + m + ")",
      "err.token": "Your token is no longer valid",
      "err.signin": "Sign-in failed",
      "err.load": "Cannot load the dashboard",
      "err.event": "A bad event on the stream",
      // cluster
      "cl.instance": "Instance", "cl.leader": "Leader", "cl.none": "none", "cl.leaderMark": " (leader)",
      "cl.members": (n) => n + (n === 1 ? " member" : " members"), "cl.membersLabel": "cluster members",
      "cl.title": "Cluster", "cl.member": "Member", "cl.url": "Address", "cl.started": "Started", "cl.role": "Role",
      "cl.isLeader": "leader", "cl.follower": "member", "cl.hospital": "Hospital",
      // pools
      "kind.equipment": "equipment", "kind.department": "department",
      "st.available": "available", "st.in-use": "in use", "st.maintenance": "maintenance", "st.offline": "offline",
      "pool.summary": (w, use, svc, out) => w + " waiting · " + (svc ? use + " of " + svc + " in use" : "none in service") +
        (out ? " · " + out + " out of service" : ""),
      "util": "Utilisation", "util.none": "no unit in service",
      "util.text": (u, s) => u + " of " + s + " units in use",
      "units": "units", "caps": "capabilities",
      "unit.patient": "Patient", "unit.order": "Order", "unit.since": (t) => "since " + t,
      "q.caption": "Queue, in dispatch order", "q.empty": "No one waiting.", "q.next": "next",
      "q.pos": "#", "q.patient": "Patient", "q.order": "Order", "q.priority": "Priority", "q.waited": "Waited",
      "q.est": "Est. wait", "q.needs": "Needs", "q.actions": "Actions", "q.afterWait": " after waiting",
      "prio.stat": "stat", "prio.asap": "asap", "prio.urgent": "urgent", "prio.routine": "routine",
      // durations
      "d.s": (n) => n + " s", "d.min": (n) => n + " min", "d.h": (h, m) => h + " h" + (m ? " " + m + " min" : ""),
      "d.about": (m) => (m === 1 ? "about 1 minute" : "about " + m + " minutes"),
      "ago": (d) => d + " ago", "ago.now": "less than a minute ago",
      // order states and actions
      "os.queued": "queued", "os.called": "called", "os.in-progress": "in progress", "os.completed": "completed",
      "os.reported": "reported, results ready", "os.cancelled": "cancelled", "os.no-show": "no-show",
      "act.priority": "Re-prioritise", "act.priority.busy": "Saving…", "act.priority.label": "New priority",
      "act.cancel": "Cancel order", "act.cancel.busy": "Cancelling…",
      "act.call": "Call now", "act.call.busy": "Calling…", "act.call.unit": "Unit", "act.call.any": "any free unit",
      "act.start": "Start", "act.start.busy": "Starting…",
      "act.complete": "Complete", "act.complete.busy": "Completing…",
      "act.noshow": "No-show", "act.noshow.busy": "Saving…",
      "act.report": "Save report", "act.report.busy": "Saving…", "act.report.label": "Report",
      "act.report.who": "The report is written by a doctor.",
      "act.open": "Open", "act.failed": (what) => what + " refused",
      "do.priority": "Re-prioritising", "do.cancel": "Cancelling", "do.call": "Calling", "do.start": "Starting",
      "do.complete": "Completing", "do.noshow": "Marking a no-show", "do.report": "Saving the report",
      "do.status": "Setting the unit's status", "do.register": "Registering", "do.find": "Finding the patient",
      "do.order": "Ordering", "do.token": "Creating the token", "do.revoke": "Revoking the token",
      "do.audit": "Searching the audit log", "do.tokens": "Listing tokens", "do.history": "Loading the history",
      // orders view
      "pt.find": "Find a patient", "pt.id": "Patient id", "pt.findBtn": "Find", "pt.findBusy": "Finding…",
      "pt.register": "Register a patient", "pt.name": "Name", "pt.birth": "Birth date (optional)",
      "pt.registerBtn": "Register", "pt.registerBusy": "Registering…",
      "pt.none": "Find or register a patient to order an exam.",
      "pt.title": (n) => "Patient " + n, "pt.born": (d) => "born " + d, "pt.noOrders": "No orders yet.",
      "pt.orders": "Orders", "pt.page": "Patient's page",
      "ord.new": "Order an exam", "ord.pool": "Pool", "ord.priority": "Priority", "ord.caps": "Needed capabilities",
      "ord.reason": "Reason", "ord.submit": "Order", "ord.busy": "Ordering…", "ord.noCaps": "none in this pool",
      "ord.created": "Created", "ord.unit": "Unit", "ord.result": "Result",
      "ord.queues": "Queues",
      // units view
      "u.status": "Status", "u.set": "Set status", "u.setBusy": "Setting…",
      "u.free": "Free", "u.calledPt": "Called", "u.inProgress": "In progress", "u.stateUnknown": "checking…",
      "u.done": "Finished here", "u.doneHint": "Exams completed on this page, until a report is written.",
      "u.doneEmpty": "None.",
      // charts
      "ch.util": "Utilisation per pool", "ch.wait": "Longest wait per priority, against its target",
      "ch.window": "Show the last", "ch.h": (n) => n + (n === 1 ? " hour" : " hours"),
      "ch.limit": "From the server's history (each pool sampled once a minute by the cluster's leader, kept 7 days), then live from this page's event stream. A gap is time without samples.",
      "ch.targets": "The dashed line is each priority's waiting target from the hospital file.",
      "ch.targetsWait": "The waiting targets are not known yet (the history has not loaded).",
      "ch.loading": "Loading the history…", "ch.liveOnly": "Showing only what this page has received live.",
      "ch.truncated": "Too many samples for one answer: only the newest are drawn.",
      "ch.nodata": "No samples yet.", "ch.target": (d) => "target " + d,
      "ch.now": (v) => "now " + v, "ch.samples": (n) => n + (n === 1 ? " sample" : " samples"),
      "ch.utilAlt": (p, v, mx) => "Utilisation of " + p + ": now " + v + ", highest " + mx,
      "ch.waitAlt": (p, v, t) => "Longest " + p + " wait: now " + v + ", target " + t,
      // admin
      "tok.title": "Tokens", "tok.new": "Create a token", "tok.role": "Role", "tok.patient": "Patient id (patient tokens)",
      "tok.label": "Label", "tok.create": "Create", "tok.createBusy": "Creating…",
      "tok.once": "The new token, shown this once: copy it now. The server keeps only its hash.",
      "tok.copy": "Copy", "tok.copied": "Copied", "tok.openPatient": "Open the patient's page with it",
      "tok.id": "Id", "tok.created": "Created", "tok.revoked": "Revoked", "tok.active": "active",
      "tok.expires": "Expires", "tok.never": "never", "tok.expired": "expired",
      "tok.revoke": "Revoke", "tok.revokeBusy": "Revoking…", "tok.refresh": "Refresh", "tok.none": "No tokens.",
      "au.title": "Audit log", "au.patient": "Patient id", "au.actor": "Actor (token id)", "au.since": "Since",
      "au.limit": "At most", "au.search": "Search", "au.searchBusy": "Searching…", "au.more": "More",
      "au.seq": "#", "au.at": "When", "au.who": "Who", "au.action": "Action", "au.order": "Order",
      "au.outcome": "Outcome", "au.detail": "Detail", "au.none": "Nothing found.",
      "ad.units": "Units and their status: the Units view.",
      // alarms
      "al.title": "Alarms", "al.loading": "Loading alarms…", "al.stream": "alarms stream",
      "al.high": "High priority", "al.medium": "Medium priority", "al.low": "Low priority",
      "al.prio": (p) => p + " priority", "al.raised": "Raised · not acknowledged", "al.acknowledged": "Acknowledged",
      "al.shelved": "Shelved",
      "al.phi1": "No patient data in notes or reasons. ",
      "al.phi2": "They are kept with the alarm and every member of staff sees them: never write a patient's name, id or clinical details.",
      "al.summary": (n, r, a, s) => n + " active · " + r + " not acknowledged · " + a + " acknowledged · " + s + " shelved",
      "al.none": "No active alarms.",
      "al.badge": (n) => n + (n === 1 ? " unacknowledged alarm" : " unacknowledged alarms"),
      "al.badgeNone": "No unacknowledged alarms",
      "al.badgeTitle": (n) => n + " active " + (n === 1 ? "alarm" : "alarms"),
      "al.note": "Note", "al.notePh": "optional, no patient data", "al.ack": "Acknowledge", "al.ackBusy": "Acknowledging…",
      "al.shelveFor": "Shelve for", "al.reason": "Reason", "al.reasonPh": "required, no patient data",
      "al.shelve": "Shelve", "al.shelveOpen": "Shelve…", "al.shelveBusy": "Shelving…", "al.cancel": "Cancel",
      "al.doAck": "Acknowledging the alarm", "al.doShelve": "Shelving the alarm",
      "al.where": "Where", "al.since": "Since", "al.ackd": "Acknowledged", "al.shelvedBy": "Shelved",
      "al.escalated": "Escalated", "al.rule": "Rule",
      "al.notYet": "not yet", "al.notYetLatch": "not yet (stays until acknowledged)",
      "al.until": (t) => "until " + t + " by ",
      "al.esc": (n) => n + (n === 1 ? " time" : " times") + " (priority raised while unacknowledged)",
      "al.esc0": "0 times", "al.cluster": "the whole cluster",
      "al.15m": "15 minutes", "al.30m": "30 minutes", "al.1h": "1 hour", "al.2h": "2 hours", "al.4h": "4 hours", "al.8h": "8 hours",
      // patient page
      "pp.open": "Open a patient's page", "pp.id": "Patient id", "pp.openBtn": "Open",
      "pp.title": "Your exams", "pp.titleFor": (n) => "Exams for " + n,
      "pp.hint": "This page updates by itself; there is no need to refresh it.",
      "pp.none": "You have no exams right now.", "pp.exam": "the exam", "pp.orderLabel": "order",
      "pp.next": (p, eta) => "You are next in line for " + p + eta,
      "pp.number": (n, p, eta) => "You are number " + n + " in line for " + p + eta,
      "pp.go": (u) => "Please go to " + u,
      "pp.under": (p, u) => "Your " + p + " exam is under way" + (u ? " at " + u : ""),
      "pp.ready": "Your results are ready",
      "pp.doneNotReady": (p) => "Your " + p + " exam is done. Results are not ready yet.",
      "pp.cancelled": (p) => "Your " + p + " exam was cancelled",
      "pp.noshow": (p) => "You missed your call for " + p + ". Please ask at the desk.",
      "pp.patient": "Patient",
      // NEWS2 and vital signs (decision support, not a diagnosis)
      "kind.patient": "patient", "al.vitals": "Vital signs",
      "n2.wardTitle": "Patients: NEWS2", "n2.label": "NEWS2 is decision support, not a diagnosis.",
      "n2.ward": "Ward", "n2.allWards": "all wards", "n2.refresh": "Refresh", "n2.refreshBusy": "Refreshing…",
      "n2.caption": "Monitored patients, highest NEWS2 risk first",
      "n2.none": "No monitored patients.", "n2.noneWard": (w) => "No monitored patients on ward " + w + ".",
      "n2.summary": (n, hi, at) => n + (n === 1 ? " monitored patient" : " monitored patients") + " · " + hi + " high risk · updated " + at,
      "n2.col.patient": "Patient", "n2.col.ward": "Ward", "n2.col.score": "NEWS2", "n2.col.risk": "Risk",
      "n2.col.trend": "Last 24 h", "n2.col.at": "Scored", "n2.col.flags": "Flags",
      "n2.risk.low": "low", "n2.risk.low-medium": "low–medium", "n2.risk.medium": "medium", "n2.risk.high": "high",
      "n2.incomplete": "incomplete", "n2.incompleteHint": "parameters missing: the risk is a lower bound",
      "n2.stale": "stale — observations due",
      "n2.sparkAlt": (n, first, last, mx) => "NEWS2 over the last 24 hours: " + n + (n === 1 ? " score" : " scores") +
        ", from " + first + " to " + last + ", highest " + mx,
      "n2.sparkNone": "no score in the last 24 hours",
      "n2.doWard": "Loading the ward",
      "n2.resp.low0": "continue routine NEWS monitoring",
      "n2.resp.low": "inform registered nurse, who must assess the patient and decide whether increased frequency of monitoring and/or escalation of care is required",
      "n2.resp.low-medium": "registered nurse to inform medical team caring for the patient, who will review and decide whether escalation of care is necessary",
      "n2.resp.medium": "registered nurse to immediately inform the medical team caring for the patient; urgent assessment by a clinician or team with core competencies in the care of acutely ill patients; clinical care in an environment with monitoring facilities",
      "n2.resp.high": "registered nurse to immediately inform the medical team caring for the patient – this should be at least at specialist registrar level; emergency assessment by a team with critical care competencies, including practitioner(s) with advanced airway management skills; consider transfer of care to a level 2 or 3 clinical care facility",
      "n2.mon.low0": "minimum 12-hourly", "n2.mon.low": "minimum 4–6-hourly", "n2.mon.low-medium": "minimum 1-hourly",
      "n2.mon.medium": "minimum 1-hourly", "n2.mon.high": "continuous monitoring of vital signs",
      "vp.open": "Vital signs and NEWS2", "vp.title": (n) => "Vital signs and NEWS2: " + n, "vp.close": "Close",
      "vp.do": "Loading vital signs", "vp.none": "No vital signs recorded for this patient.",
      "vp.nowTitle": "NEWS2 now", "vp.aggregate": "aggregate score", "vp.risk": "Clinical risk",
      "vp.lowerBound": " (a lower bound: parameters missing)", "vp.at": "Scored", "vp.response": "Clinical response",
      "vp.monitoring": "Monitoring frequency", "vp.scale": "SpO2 scale",
      "vp.scale.scale1": "scale 1", "vp.scale.scale2": "scale 2 (hypercapnic respiratory failure, target 88–92 %)",
      "vp.red": "A single parameter scored 3 (a red score).",
      "vp.breakdown": "Each parameter's score", "vp.param": "Parameter", "vp.value": "Value used", "vp.score": "Score",
      "vp.missing": "missing — never observed", "vp.staleP": (tm) => "stale — last observed " + tm,
      "vp.trend": "NEWS2 over the last 24 hours", "vp.vitals": "Vital signs over the last 24 hours",
      "vp.trendAlt": (n, last) => "NEWS2 over the last 24 hours: " + n + (n === 1 ? " score" : " scores") + (n ? ", latest " + last : ""),
      "vp.noData": "No values in the last 24 hours.",
      "vp.latest": (v, tm) => "latest " + v + " at " + tm,
      "vp.count": (n) => n + (n === 1 ? " value" : " values"),
      "vp.artefacts": (n) => n + (n === 1 ? " suspected artefact" : " suspected artefacts"),
      "vp.chartAlt": (name, n, latest, a) => name + " over the last 24 hours: " + n + (n === 1 ? " value" : " values") +
        (latest ? ", " + latest : "") + (a ? ", " + a + (a === 1 ? " suspected artefact" : " suspected artefacts") + " (not scored)" : ""),
      "vp.legend.value": "value", "vp.legend.artefact": "suspected artefact: stored, not scored, not joined to the line",
      "vp.legend.band": "range that scores 0", "vp.legend.threshold": "NEWS2 5 (medium) and 7 (high)",
      "vp.legend.incomplete": "hollow: incomplete score",
      "vp.markers": "Consciousness and oxygen",
      "vp.markersAlt": (c, o) => "Consciousness: " + c + "; air or oxygen: " + o,
      "vp.artefactTitle": (r) => "suspected artefact: " + r,
      "vp.onOxygen": "on oxygen", "vp.air": "air",
      "vp.table": "Every value as a table", "vp.when": "When", "vp.source": "Source", "vp.note": "Note",
      "vt.respiratory_rate": "Respiratory rate", "vt.spo2": "SpO2", "vt.heart_rate": "Heart rate",
      "vt.systolic_bp": "Systolic blood pressure", "vt.temperature": "Temperature",
      "vt.consciousness": "Consciousness (ACVPU)", "vt.inhaled_oxygen": "Air or oxygen",
      "np.respiration_rate": "Respiration rate", "np.spo2": "SpO2", "np.air_or_oxygen": "Air or oxygen",
      "np.systolic_bp": "Systolic blood pressure", "np.pulse": "Pulse", "np.consciousness": "Consciousness",
      "np.temperature": "Temperature",
      "acvpu.0": "A: alert", "acvpu.1": "C: new confusion", "acvpu.2": "V: responds to voice",
      "acvpu.3": "P: responds to pain", "acvpu.4": "U: unresponsive",
      "unit.perMin": "/min",
    },
    "zh-CN": {
      "lang.name": "中文（简体）",
      "lang.label": "语言",
      "skip": "跳到正文",
      "signin.title": "登录",
      "signin.hint": "请粘贴您收到的访问令牌（以 mkt_ 开头）。",
      "signin.label": "访问令牌",
      "signin.submit": "打开仪表板",
      "signin.bad": "令牌的格式是 mkt_ 后接十六进制数字。",
      "signout": "退出",
      "noscript": "medkeeper 仪表板需要 JavaScript。",
      "who.patient": "患者",
      "who.staff": (r) => "当前身份：" + r,
      "tz.label": "时区",
      "tz.hospital": (z) => "时间按医院所在时区 " + z + " 显示",
      "tz.device": (z) => "时间按本设备的时区 " + z + " 显示（医院配置文件未指定时区）",
      "tz.unknown": (z, hz) => "时间按本设备的时区 " + z + " 显示：本浏览器不认识医院的时区 " + hz,
      "role.admin": "管理员", "role.scheduler": "调度员", "role.doctor": "医生",
      "role.nurse": "护士", "role.technician": "技师", "role.patient": "患者",
      "tabs.label": "视图",
      "tab.ward": "病区", "tab.orders": "检查申请", "tab.units": "设备", "tab.charts": "图表", "tab.admin": "管理",
      "view.ward": "病区：报警、设备与排队",
      "view.orders": "患者与检查申请",
      "view.units": "设备工作台",
      "view.charts": "使用率与等候时间",
      "view.admin": "系统管理",
      "view.patient": "我的检查",
      "live.connecting": "连接中", "live.live": "实时", "live.reconnecting": "重新连接中",
      "live.offline": "离线，正在重试", "live.events": "事件流", "live.patient": "患者事件流",
      "loading": "加载中…", "loading.pools": "正在加载资源池…", "loading.queue": "正在加载队列…",
      "err.network": (m) => "无法连接服务器（" + m + "）",
      "err.token": "您的令牌已失效",
      "err.signin": "登录失败",
      "err.load": "无法加载仪表板",
      "err.event": "事件流中有无法解析的事件",
      "cl.instance": "实例", "cl.leader": "主节点", "cl.none": "无", "cl.leaderMark": "（主节点）",
      "cl.members": (n) => n + " 个成员", "cl.membersLabel": "集群成员",
      "cl.title": "集群", "cl.member": "成员", "cl.url": "地址", "cl.started": "启动时间", "cl.role": "角色",
      "cl.isLeader": "主节点", "cl.follower": "成员", "cl.hospital": "医院",
      "kind.equipment": "设备", "kind.department": "科室",
      "st.available": "空闲", "st.in-use": "使用中", "st.maintenance": "维护中", "st.offline": "离线",
      "pool.summary": (w, use, svc, out) => w + " 人等候 · " + (svc ? svc + " 台中 " + use + " 台使用中" : "无可用设备") +
        (out ? " · " + out + " 台停用" : ""),
      "util": "使用率", "util.none": "无可用设备",
      "util.text": (u, s) => s + " 台中 " + u + " 台使用中",
      "units": "设备", "caps": "功能",
      "unit.patient": "患者", "unit.order": "申请", "unit.since": (t) => "自 " + t,
      "q.caption": "队列（按调度顺序）", "q.empty": "无人等候。", "q.next": "下一位",
      "q.pos": "序号", "q.patient": "患者", "q.order": "申请", "q.priority": "优先级", "q.waited": "已等候",
      "q.est": "预计等候", "q.needs": "所需功能", "q.actions": "操作", "q.afterWait": "（因等候时间提升）",
      "prio.stat": "特急", "prio.asap": "尽快", "prio.urgent": "紧急", "prio.routine": "常规",
      "d.s": (n) => n + " 秒", "d.min": (n) => n + " 分钟", "d.h": (h, m) => h + " 小时" + (m ? " " + m + " 分钟" : ""),
      "d.about": (m) => "约 " + m + " 分钟",
      "ago": (d) => d + "前", "ago.now": "不到一分钟前",
      "os.queued": "排队中", "os.called": "已叫号", "os.in-progress": "检查中", "os.completed": "已完成",
      "os.reported": "已出报告，结果可查", "os.cancelled": "已取消", "os.no-show": "未到场",
      "act.priority": "调整优先级", "act.priority.busy": "保存中…", "act.priority.label": "新优先级",
      "act.cancel": "取消申请", "act.cancel.busy": "取消中…",
      "act.call": "立即叫号", "act.call.busy": "叫号中…", "act.call.unit": "设备", "act.call.any": "任一空闲设备",
      "act.start": "开始检查", "act.start.busy": "开始中…",
      "act.complete": "完成检查", "act.complete.busy": "完成中…",
      "act.noshow": "未到场", "act.noshow.busy": "保存中…",
      "act.report": "保存报告", "act.report.busy": "保存中…", "act.report.label": "报告",
      "act.report.who": "报告由医生撰写。",
      "act.open": "打开", "act.failed": (what) => what + "被拒绝",
      "do.priority": "调整优先级", "do.cancel": "取消申请", "do.call": "叫号", "do.start": "开始检查",
      "do.complete": "完成检查", "do.noshow": "标记未到场", "do.report": "保存报告",
      "do.status": "设置设备状态", "do.register": "登记患者", "do.find": "查找患者",
      "do.order": "开具检查申请", "do.token": "创建令牌", "do.revoke": "吊销令牌",
      "do.audit": "查询审计日志", "do.tokens": "列出令牌", "do.history": "加载历史数据",
      "pt.find": "查找患者", "pt.id": "患者编号", "pt.findBtn": "查找", "pt.findBusy": "查找中…",
      "pt.register": "登记新患者", "pt.name": "姓名", "pt.birth": "出生日期（可选）",
      "pt.registerBtn": "登记", "pt.registerBusy": "登记中…",
      "pt.none": "请先查找或登记患者，再开具检查申请。",
      "pt.title": (n) => "患者 " + n, "pt.born": (d) => "出生于 " + d, "pt.noOrders": "尚无检查申请。",
      "pt.orders": "检查申请", "pt.page": "患者页面",
      "ord.new": "开具检查申请", "ord.pool": "资源池", "ord.priority": "优先级", "ord.caps": "所需功能",
      "ord.reason": "申请原因", "ord.submit": "提交申请", "ord.busy": "提交中…", "ord.noCaps": "该资源池无可选功能",
      "ord.created": "创建时间", "ord.unit": "设备", "ord.result": "结果",
      "ord.queues": "队列",
      "u.status": "状态", "u.set": "设置状态", "u.setBusy": "设置中…",
      "u.free": "空闲", "u.calledPt": "已叫号", "u.inProgress": "检查中", "u.stateUnknown": "查询中…",
      "u.done": "本页完成的检查", "u.doneHint": "在本页完成的检查，直到写出报告为止。",
      "u.doneEmpty": "无。",
      "ch.util": "各资源池使用率", "ch.wait": "各优先级最长等候时间（对照目标）",
      "ch.window": "显示最近", "ch.h": (n) => n + " 小时",
      "ch.limit": "数据来自服务器保存的历史（由集群主节点每分钟对每个资源池采样一次，保留 7 天），之后由本页的实时事件流继续更新。空白表示该时段没有样本。",
      "ch.targets": "虚线为医院配置文件中各优先级的等候目标。",
      "ch.targetsWait": "等候目标尚未获知（历史数据未加载）。",
      "ch.loading": "正在加载历史数据…", "ch.liveOnly": "仅显示本页实时收到的数据。",
      "ch.truncated": "样本过多，仅绘制最新的部分。",
      "ch.nodata": "尚无数据。", "ch.target": (d) => "目标 " + d,
      "ch.now": (v) => "当前 " + v, "ch.samples": (n) => n + " 个样本",
      "ch.utilAlt": (p, v, mx) => p + " 使用率：当前 " + v + "，最高 " + mx,
      "ch.waitAlt": (p, v, t) => p + " 最长等候：当前 " + v + "，目标 " + t,
      "tok.title": "令牌", "tok.new": "创建令牌", "tok.role": "角色", "tok.patient": "患者编号（患者令牌）",
      "tok.label": "标签", "tok.create": "创建", "tok.createBusy": "创建中…",
      "tok.once": "新令牌仅显示这一次，请立即复制。服务器只保存其哈希值。",
      "tok.copy": "复制", "tok.copied": "已复制", "tok.openPatient": "用它打开患者页面",
      "tok.id": "编号", "tok.created": "创建时间", "tok.revoked": "吊销时间", "tok.active": "有效",
      "tok.expires": "到期时间", "tok.never": "永不过期", "tok.expired": "已过期",
      "tok.revoke": "吊销", "tok.revokeBusy": "吊销中…", "tok.refresh": "刷新", "tok.none": "没有令牌。",
      "au.title": "审计日志", "au.patient": "患者编号", "au.actor": "操作者（令牌编号）", "au.since": "起始时间",
      "au.limit": "最多", "au.search": "查询", "au.searchBusy": "查询中…", "au.more": "更多",
      "au.seq": "序号", "au.at": "时间", "au.who": "操作者", "au.action": "操作", "au.order": "申请",
      "au.outcome": "结果", "au.detail": "详情", "au.none": "没有记录。",
      "ad.units": "设备及其状态：见“设备”视图。",
      "al.title": "报警", "al.loading": "正在加载报警…", "al.stream": "报警事件流",
      "al.high": "高优先级", "al.medium": "中优先级", "al.low": "低优先级",
      "al.prio": (p) => ({ high: "高", medium: "中", low: "低" }[p] || p) + "优先级",
      "al.raised": "已触发 · 未确认", "al.acknowledged": "已确认", "al.shelved": "已暂停",
      "al.phi1": "备注和原因中不得包含患者数据。",
      "al.phi2": "它们随报警保存，所有工作人员都能看到：切勿写入患者姓名、编号或临床信息。",
      "al.summary": (n, r, a, s) => n + " 条活动报警 · " + r + " 条未确认 · " + a + " 条已确认 · " + s + " 条已暂停",
      "al.none": "没有活动报警。",
      "al.badge": (n) => n + " 条未确认报警",
      "al.badgeNone": "没有未确认报警",
      "al.badgeTitle": (n) => n + " 条活动报警",
      "al.note": "备注", "al.notePh": "可选，不含患者数据", "al.ack": "确认", "al.ackBusy": "确认中…",
      "al.shelveFor": "暂停时长", "al.reason": "原因", "al.reasonPh": "必填，不含患者数据",
      "al.shelve": "暂停", "al.shelveOpen": "暂停…", "al.shelveBusy": "暂停中…", "al.cancel": "取消",
      "al.doAck": "确认报警", "al.doShelve": "暂停报警",
      "al.where": "位置", "al.since": "开始", "al.ackd": "确认", "al.shelvedBy": "暂停",
      "al.escalated": "升级", "al.rule": "规则",
      "al.notYet": "尚未确认", "al.notYetLatch": "尚未确认（确认前一直保留）",
      "al.until": (t) => "至 " + t + "，操作者 ",
      "al.esc": (n) => n + " 次（未确认期间提升了优先级）",
      "al.esc0": "0 次", "al.cluster": "整个集群",
      "al.15m": "15 分钟", "al.30m": "30 分钟", "al.1h": "1 小时", "al.2h": "2 小时", "al.4h": "4 小时", "al.8h": "8 小时",
      "pp.open": "打开患者页面", "pp.id": "患者编号", "pp.openBtn": "打开",
      "pp.title": "您的检查", "pp.titleFor": (n) => n + " 的检查",
      "pp.hint": "本页面会自动更新，无需刷新。",
      "pp.none": "您目前没有检查。", "pp.exam": "检查", "pp.orderLabel": "申请",
      "pp.next": (p, eta) => "下一位就是您：" + p + eta,
      "pp.number": (n, p, eta) => "您在 " + p + " 队列中排第 " + n + " 位" + eta,
      "pp.go": (u) => "请前往 " + u,
      "pp.under": (p, u) => "您的 " + p + " 检查正在进行" + (u ? "（" + u + "）" : ""),
      "pp.ready": "您的检查结果已出",
      "pp.doneNotReady": (p) => "您的 " + p + " 检查已完成，结果尚未出来。",
      "pp.cancelled": (p) => "您的 " + p + " 检查已取消",
      "pp.noshow": (p) => "您错过了 " + p + " 的叫号，请到服务台咨询。",
      "pp.patient": "患者",
      "kind.patient": "患者", "al.vitals": "生命体征",
      "n2.wardTitle": "患者：NEWS2 评分", "n2.label": "NEWS2 为辅助决策，并非诊断。",
      "n2.ward": "病区", "n2.allWards": "全部病区", "n2.refresh": "刷新", "n2.refreshBusy": "刷新中…",
      "n2.caption": "受监测患者（NEWS2 风险高者在前）",
      "n2.none": "没有受监测的患者。", "n2.noneWard": (w) => "病区 " + w + " 没有受监测的患者。",
      "n2.summary": (n, hi, at) => n + " 名受监测患者 · " + hi + " 名高风险 · 更新于 " + at,
      "n2.col.patient": "患者", "n2.col.ward": "病区", "n2.col.score": "NEWS2", "n2.col.risk": "风险",
      "n2.col.trend": "近 24 小时", "n2.col.at": "评分时间", "n2.col.flags": "提示",
      "n2.risk.low": "低", "n2.risk.low-medium": "低–中", "n2.risk.medium": "中", "n2.risk.high": "高",
      "n2.incomplete": "不完整", "n2.incompleteHint": "有参数缺失：风险为下限",
      "n2.stale": "已过时 — 需测量生命体征",
      "n2.sparkAlt": (n, first, last, mx) => "近 24 小时 NEWS2：" + n + " 次评分，从 " + first + " 到 " + last + "，最高 " + mx,
      "n2.sparkNone": "近 24 小时无评分",
      "n2.doWard": "加载病区",
      "n2.resp.low0": "继续常规 NEWS 监测",
      "n2.resp.low": "告知注册护士，由其评估患者，并决定是否需要提高监测频率和/或升级处理",
      "n2.resp.low-medium": "注册护士告知负责该患者的医疗团队，由其评估并决定是否需要升级处理",
      "n2.resp.medium": "注册护士立即告知负责该患者的医疗团队；由具备急危重症护理核心能力的临床医生或团队紧急评估；在具备监护条件的环境中进行临床护理",
      "n2.resp.high": "注册护士立即告知负责该患者的医疗团队（至少为专科住院医师级别）；由具备重症监护能力（包括高级气道管理技能）的团队紧急评估；考虑转入二级或三级重症监护单元",
      "n2.mon.low0": "至少每 12 小时一次", "n2.mon.low": "至少每 4–6 小时一次", "n2.mon.low-medium": "至少每小时一次",
      "n2.mon.medium": "至少每小时一次", "n2.mon.high": "持续监测生命体征",
      "vp.open": "生命体征与 NEWS2", "vp.title": (n) => n + " 的生命体征与 NEWS2", "vp.close": "关闭",
      "vp.do": "加载生命体征", "vp.none": "该患者尚无生命体征记录。",
      "vp.nowTitle": "当前 NEWS2", "vp.aggregate": "总分", "vp.risk": "临床风险",
      "vp.lowerBound": "（下限：有参数缺失）", "vp.at": "评分时间", "vp.response": "临床响应",
      "vp.monitoring": "监测频率", "vp.scale": "SpO2 量表",
      "vp.scale.scale1": "量表 1", "vp.scale.scale2": "量表 2（高碳酸血症性呼吸衰竭，目标 88–92%）",
      "vp.red": "有单项参数得 3 分（红色评分）。",
      "vp.breakdown": "各参数评分", "vp.param": "参数", "vp.value": "采用值", "vp.score": "得分",
      "vp.missing": "缺失 — 从未测量", "vp.staleP": (tm) => "已过时 — 最近测量于 " + tm,
      "vp.trend": "近 24 小时 NEWS2 趋势", "vp.vitals": "近 24 小时生命体征",
      "vp.trendAlt": (n, last) => "近 24 小时 NEWS2：" + n + " 次评分" + (n ? "，最新 " + last : ""),
      "vp.noData": "近 24 小时无数据。",
      "vp.latest": (v, tm) => "最新 " + v + "（" + tm + "）",
      "vp.count": (n) => n + " 个数值",
      "vp.artefacts": (n) => n + " 个疑似伪差",
      "vp.chartAlt": (name, n, latest, a) => "近 24 小时" + name + "：" + n + " 个数值" + (latest ? "，" + latest : "") +
        (a ? "，" + a + " 个疑似伪差（不计分）" : ""),
      "vp.legend.value": "数值", "vp.legend.artefact": "疑似伪差：已保存，不计分，不连线",
      "vp.legend.band": "得 0 分的范围", "vp.legend.threshold": "NEWS2 5 分（中）与 7 分（高）",
      "vp.legend.incomplete": "空心：评分不完整",
      "vp.markers": "意识与吸氧",
      "vp.markersAlt": (c, o) => "意识：" + c + "；空气或吸氧：" + o,
      "vp.artefactTitle": (r) => "疑似伪差：" + r,
      "vp.onOxygen": "吸氧", "vp.air": "空气",
      "vp.table": "以表格显示所有数值", "vp.when": "时间", "vp.source": "来源", "vp.note": "备注",
      "vt.respiratory_rate": "呼吸频率", "vt.spo2": "血氧饱和度 SpO2", "vt.heart_rate": "心率",
      "vt.systolic_bp": "收缩压", "vt.temperature": "体温",
      "vt.consciousness": "意识（ACVPU）", "vt.inhaled_oxygen": "空气或吸氧",
      "np.respiration_rate": "呼吸频率", "np.spo2": "血氧饱和度 SpO2", "np.air_or_oxygen": "空气或吸氧",
      "np.systolic_bp": "收缩压", "np.pulse": "脉搏", "np.consciousness": "意识",
      "np.temperature": "体温",
      "acvpu.0": "A：清醒", "acvpu.1": "C：新发意识混乱", "acvpu.2": "V：对声音有反应",
      "acvpu.3": "P：对疼痛有反应", "acvpu.4": "U：无反应",
      "unit.perMin": "次/分",
    },
  };
  const LANGS = ["en", "zh-CN"];
  const missing = new Set();
  window.__i18nMissing = missing;

  function pickLang() {
    const saved = localStorage.getItem(LANG_KEY);
    if (LANGS.includes(saved)) return saved;
    for (const l of navigator.languages || [navigator.language || "en"]) {
      if (/^zh(-|$)/i.test(l)) return "zh-CN";
      if (/^en(-|$)/i.test(l)) return "en";
    }
    return "en";
  }
  let lang = pickLang();

  function t(key, ...args) {
    let v = STRINGS[lang][key];
    if (v === undefined) { missing.add(lang + ":" + key); v = STRINGS.en[key]; }
    if (v === undefined) return key;
    if (typeof v === "function") return v(...args);
    return args.length ? v.replace(/\{(\d+)\}/g, (_, i) => String(args[i])) : v;
  }

  // The hospital's time zone, which every date and time is shown in: the hospital file's
  // `time_zone`, served with /api/whoami (useZone). The device's own while the file names none,
  // before sign-in, and if this browser does not know the name (Intl throws a RangeError).
  const DEVICE_TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  let TZ = DEVICE_TZ;
  let hospitalTZ = null; // the name the hospital file gives, known to this browser or not
  function useZone(zone) {
    hospitalTZ = zone || null;
    TZ = DEVICE_TZ;
    if (zone) {
      try {
        new Intl.DateTimeFormat("en", { timeZone: zone });
        TZ = zone;
      } catch (e) {
        if (!(e instanceof RangeError)) throw e;
        console.warn("medkeeper: this browser does not know the hospital's time zone " + JSON.stringify(zone)
          + " (" + e.message + "); showing times in this device's zone, " + DEVICE_TZ);
      }
    }
    showZone();
  }
  // The zone, named discreetly in the header (signed in) and written out at the foot.
  function showZone() {
    const text = TZ === hospitalTZ ? t("tz.hospital", TZ)
      : hospitalTZ ? t("tz.unknown", TZ, hospitalTZ) : t("tz.device", TZ);
    const foot = $("tz");
    foot.textContent = text;
    foot.dataset.zone = TZ;
    foot.dataset.source = TZ === hospitalTZ ? "hospital" : hospitalTZ ? "unknown" : "device";
    const head = $("zone");
    head.hidden = !me;
    head.title = text;
    put(head, h("span", { class: "sr-only" }, t("tz.label") + " "), TZ);
  }
  const fmtCache = {};
  function fmt(kind) {
    const k = lang + "|" + TZ + "|" + kind;
    if (!fmtCache[k]) {
      const opts = {
        time: { hour: "2-digit", minute: "2-digit", hourCycle: "h23" },
        datetime: { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23" },
        date: { year: "numeric", month: "2-digit", day: "2-digit" },
      }[kind];
      fmtCache[k] = new Intl.DateTimeFormat(lang, Object.assign({ timeZone: TZ }, opts));
    }
    return fmtCache[k];
  }
  const clock = (ms) => fmt("time").format(new Date(ms));
  // TZ's offset from UTC at the instant `ms`, in ms: what a wall clock there reads, minus UTC.
  function zoneOffset(ms) {
    const k = "offset|" + TZ;
    if (!fmtCache[k]) {
      fmtCache[k] = new Intl.DateTimeFormat("en-US", { timeZone: TZ, hourCycle: "h23", year: "numeric",
        month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
    }
    const p = {};
    for (const x of fmtCache[k].formatToParts(new Date(ms))) p[x.type] = x.value;
    return Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour % 24, +p.minute, +p.second) - (ms - (((ms % 1000) + 1000) % 1000));
  }
  // A wall-clock time typed into a datetime-local field ("2024-03-01T10:15"), read in TZ (the
  // browser's own reading would be the device's zone): ms since the epoch, NaN if malformed.
  function zonedMs(local) {
    const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?/.exec(local || "");
    if (!m) return NaN;
    const wall = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0));
    // The offset at the first guess may differ from the offset at the answer across a change
    // (summer time): a second step settles it.
    return wall - zoneOffset(wall - zoneOffset(wall));
  }
  const dateTime = (ms) => fmt("datetime").format(new Date(ms));
  // A birth date "1970-01-31" is a calendar date, not an instant: shown without a time zone.
  function calendarDate(s) {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s || "");
    if (!m) return s || "";
    return new Intl.DateTimeFormat(lang, { year: "numeric", month: "2-digit", day: "2-digit", timeZone: "UTC" })
      .format(new Date(Date.UTC(+m[1], +m[2] - 1, +m[3])));
  }

  // ---------- small helpers ----------
  const $ = (id) => document.getElementById(id);

  // h("td", {class: "x", data: {order: id}, style: {width: "3%"}}, "text", childNode, ...)
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "data") for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = dv;
      else if (k === "class") el.setAttribute("class", v);
      else if (k === "style") Object.assign(el.style, v); // CSSOM: allowed under a strict CSP
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  const SVGNS = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVGNS, tag);
    setAttrs(el, attrs);
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  // replaceChildren without the null / false of conditional parts (it would write "null").
  function put(el, ...kids) {
    el.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
  }

  let uid = 0;
  const newId = (p) => p + "-" + (++uid);

  function short(id) {
    id = String(id || "");
    return id.length > 12 ? id.slice(0, 10) + "…" : id;
  }
  function idCode(id) {
    return h("code", { class: "id", title: id }, short(id));
  }

  function duration(sec) {
    sec = Math.max(0, Math.round(Number(sec) || 0));
    if (sec < 60) return t("d.s", sec);
    const m = Math.round(sec / 60);
    if (m < 60) return t("d.min", m);
    return t("d.h", Math.floor(m / 60), m % 60);
  }
  const minutes = (sec) => t("d.about", Math.max(1, Math.round((Number(sec) || 0) / 60)));
  function ago(ms) {
    const sec = (Date.now() - ms) / 1000;
    return sec < 60 ? t("ago.now") : t("ago", duration(sec));
  }
  function agoEl(ms) {
    return h("time", { class: "ago", datetime: new Date(ms).toISOString(), title: dateTime(ms), data: { ms } }, ago(ms));
  }
  const prioText = (p) => t("prio." + p);
  const stateText = (st) => t("os." + st);
  const roleText = (r) => t("role." + r);

  function setStatus(msg, kind) {
    const el = $("status");
    el.textContent = msg || "";
    el.hidden = !msg;
    el.className = "status" + (kind ? " status-" + kind : "");
  }

  // ---------- API ----------
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // The token goes in the Authorization header, never in a URL (only event streams, which a
  // browser cannot give headers, carry ?access_token=).
  async function api(path, opts) {
    opts = opts || {};
    const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, {
        method: opts.method || "GET",
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        referrerPolicy: "no-referrer",
      });
    } catch (e) {
      throw new ApiError(0, "network", t("err.network", e.message));
    }
    const text = await res.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
    if (!res.ok) {
      const err = body && body.error ? body.error : {};
      throw new ApiError(res.status, err.code || "http_" + res.status,
        err.message || res.status + " " + res.statusText);
    }
    return body;
  }

  function errText(what, e) {
    const code = e && e.code ? " [" + e.code + "]" : "";
    return what + ": " + (e && e.message ? e.message : String(e)) + code;
  }
  function showError(what, e) { setStatus(errText(what, e), "error"); }
  function errorBox() { return h("p", { class: "form-error", role: "alert", hidden: true }); }

  // One action at a time per button: the button is disabled before the request leaves (a
  // double click sends one request), its label says what is happening, and a refusal is shown
  // in `errEl` with the server's own message and code.
  async function act(btn, errEl, what, busyText, run, onOk) {
    if (btn.dataset.busy === "1") return;
    btn.dataset.busy = "1";
    const label = btn.textContent;
    btn.disabled = true;
    btn.setAttribute("aria-busy", "true");
    if (busyText) btn.textContent = busyText;
    if (errEl) errEl.hidden = true;
    try {
      const r = await run();
      if (onOk) onOk(r);
    } catch (e) {
      if (errEl && errEl.isConnected) { errEl.textContent = errText(what, e); errEl.hidden = false; }
      else showError(what, e);
    } finally {
      btn.dataset.busy = "";
      btn.disabled = false;
      btn.removeAttribute("aria-busy");
      btn.textContent = label;
    }
  }

  // A form whose submit runs `run` once at a time (see `act`); `fields` are label/control pairs.
  function field(labelText, control, opts) {
    const id = control.id || (control.id = newId("f"));
    return h("div", { class: "field" + (opts && opts.wide ? " wide" : "") }, h("label", { for: id }, labelText), control);
  }

  // ---------- roles: the API's role matrix (docs/api.md). A control a role may not use is not
  // shown; the server refuses it anyway. ----------
  const STAFF = ["admin", "scheduler", "doctor", "nurse", "technician"];
  const MAY = {
    unitStatus: ["admin", "scheduler", "technician"],
    register: ["admin", "scheduler", "doctor", "nurse"],
    order: ["admin", "scheduler", "doctor"],
    priority: ["admin", "scheduler", "doctor", "nurse"],
    cancel: ["admin", "scheduler", "doctor"],
    call: ["admin", "scheduler", "technician"],
    start: ["admin", "doctor", "nurse", "technician"],
    complete: ["admin", "doctor", "technician"],
    report: ["admin", "doctor"],
    noShow: ["admin", "scheduler", "nurse", "technician"],
    shelve: ["admin", "scheduler"],
    // The ward's NEWS2 and a patient's vital signs: the clinical staff (the API lets
    // technicians read them too, but they are not theirs to act on).
    vitals: ["admin", "scheduler", "doctor", "nurse"],
    admin: ["admin"],
  };
  const may = (what) => !!me && MAY[what].includes(me.role);
  // The views each role works in, its own first.
  const TABS = {
    admin: ["ward", "orders", "units", "charts", "admin"],
    scheduler: ["orders", "ward", "units", "charts"],
    doctor: ["orders", "ward", "charts"],
    nurse: ["ward", "orders", "charts"],
    technician: ["units", "ward", "charts"],
  };

  // ---------- live data: one stream, many views ----------
  const live = {
    pools: new Map(), // "equipment:MRI" -> the latest view (with its queue) and when it came
    cluster: null,
    alarms: [],
    poolSubs: [], clusterSubs: [], alarmSubs: [],
  };
  const poolKey = (p) => (p.pool || "equipment") + ":" + p.name;
  function onPool(d) {
    d.received_ms = Date.now();
    live.pools.set(poolKey(d), d);
    for (const f of live.poolSubs) f(d);
  }

  // An EventSource with a visible connected / reconnecting indicator. The browser reconnects
  // by itself after a dropped connection; if it gives up (an HTTP error), we retry with backoff.
  function stream(path, handlers, indicators) {
    const entry = { es: null, timer: null, closed: false, delay: 1000 };
    const badges = () => [].concat(typeof indicators === "function" ? indicators() : indicators || []);
    const set = (state) => {
      for (const b of badges()) {
        b.dataset.state = state;
        b.lastChild.textContent = t("live." + state);
      }
    };
    const open = () => {
      if (entry.closed) return;
      const sep = path.includes("?") ? "&" : "?";
      const es = new EventSource(path + sep + "access_token=" + encodeURIComponent(token));
      entry.es = es;
      set("connecting");
      es.onopen = () => { entry.delay = 1000; set("live"); };
      for (const [event, onData] of Object.entries(handlers)) {
        es.addEventListener(event, (ev) => {
          set("live");
          let data;
          try { data = JSON.parse(ev.data); } catch (e) { showError(t("err.event"), e); return; }
          onData(data);
        });
      }
      es.onerror = () => {
        if (es.readyState === EventSource.CLOSED) {
          set("offline");
          es.close();
          entry.timer = setTimeout(open, entry.delay);
          entry.delay = Math.min(entry.delay * 2, 30000);
          checkAuth();
        } else {
          set("reconnecting");
        }
      };
    };
    entry.close = () => {
      entry.closed = true;
      clearTimeout(entry.timer);
      if (entry.es) entry.es.close();
    };
    streams.push(entry);
    open();
    return entry;
  }

  function liveBadge(label) {
    return h("span", { class: "live", data: { state: "connecting" }, title: label },
      h("span", { class: "live-dot", "aria-hidden": "true" }), h("span", {}, t("live.connecting")));
  }
  const allBadges = [];

  async function checkAuth() {
    try { await api("/api/whoami"); } catch (e) {
      if (e.status === 401) signOut(errText(t("err.token"), e));
    }
  }

  // ---------- token, language and start ----------
  // The token arrives in the URL's fragment (#token=…, never sent to the server) and lives in
  // sessionStorage; it is taken out of the address bar at once.
  function readToken() {
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (m) {
      const tk = decodeURIComponent(m[1]);
      sessionStorage.setItem(TOKEN_KEY, tk);
      history.replaceState(null, "", location.pathname + location.search);
      return tk;
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function closeStreams() {
    while (streams.length) streams.pop().close();
    live.poolSubs = []; live.clusterSubs = []; live.alarmSubs = [];
    allBadges.length = 0;
  }

  function resetChrome() {
    put($("view"), );
    put($("cluster"), );
    put($("tabs"), );
    $("tabs").hidden = true;
    tabCtl = null;
    $("who").textContent = "";
    $("view-name").textContent = "";
    $("alarm-badge").hidden = true;
    openVitals = null;
    clearInterval(wardTimer);
  }

  function signOut(message) {
    closeStreams();
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    me = null;
    useZone(null);
    resetChrome();
    document.title = "medkeeper";
    $("signout").hidden = true;
    $("signin").hidden = false;
    setStatus(message || "", message ? "error" : "");
    $("token-input").focus();
  }

  // The strings of index.html itself.
  function applyStatic() {
    document.documentElement.lang = lang;
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    $("lang-label").textContent = t("lang.label");
    const sel = $("lang");
    put(sel, ...LANGS.map((l) => h("option", { value: l, lang: l, selected: l === lang }, STRINGS[l]["lang.name"])));
    showZone();
    $("tabs").setAttribute("aria-label", t("tabs.label"));
  }

  async function start() {
    applyStatic();
    token = readToken();
    if (!token) { signOut(); return; }
    $("signin").hidden = true;
    try { me = await api("/api/whoami"); } catch (e) {
      if (e.status === 401) { signOut(errText(t("err.signin"), e)); return; }
      showError(t("err.load"), e);
      return;
    }
    useZone(me.time_zone);
    setStatus("");
    $("signout").hidden = false;
    $("who").textContent = me.role === "patient" ? t("who.patient") : t("who.staff", roleText(me.role));
    $("who").dataset.role = me.role;
    const params = new URLSearchParams(location.search);
    if (me.role === "patient") {
      patientView(me.patient);
    } else if (location.pathname === "/patient") {
      const c = clusterHeader();
      allBadges.push(c.live);
      live.clusterSubs.push(c.render);
      stream("/api/cluster/events", { cluster: (d) => { live.cluster = d; for (const f of live.clusterSubs) f(d); } }, allBadges);
      patientView(params.get("id"));
    } else {
      staffView();
    }
  }

  // A new language: the page is rebuilt in place (no reload; the charts keep their samples).
  function setLang(l) {
    if (!LANGS.includes(l) || l === lang) return;
    lang = l;
    localStorage.setItem(LANG_KEY, l);
    closeStreams();
    resetChrome();
    start();
  }

  // ---------- cluster header ----------
  function clusterHeader() {
    const box = $("cluster");
    const body = h("span", { class: "cluster-body" }, "…");
    const lv = liveBadge(t("live.events"));
    put(box, body, lv);
    const render = (c) => {
      const members = (c.members || []).map((m) => {
        const leader = m.id === c.leader;
        return h("li", { class: leader ? "member leader" : "member", title: m.url || "" },
          leader ? h("span", { "aria-hidden": "true" }, "★ ") : null, m.id,
          leader ? h("span", { class: "sr-only" }, t("cl.leaderMark")) : null);
      });
      put(body, 
        c.hospital ? h("strong", { class: "hospital" }, c.hospital + " · ") : null,
        h("span", { class: "cl-label" }, t("cl.instance") + " "), h("strong", {}, c.instance || "?"),
        h("span", { class: "cl-label" }, " · " + t("cl.leader") + " "),
        h("strong", {}, c.leader || t("cl.none")),
        h("span", { class: "cl-label" }, " · " + t("cl.members", members.length)),
        h("ul", { class: "members", "aria-label": t("cl.membersLabel") }, members));
    };
    api("/api/cluster").then((c) => { if (!live.cluster) render(c); }, (e) => showError(t("cl.title"), e));
    return { render, live: lv };
  }

  // ---------- staff: tabs over one stream ----------
  async function staffView() {
    const role = me.role;
    const view = $("view");
    put(view, h("p", { class: "muted" }, t("loading.pools")));
    const header = clusterHeader();
    allBadges.push(header.live);
    live.clusterSubs.push((c) => { live.cluster = c; header.render(c); });
    let pools;
    try { pools = await api("/api/pools"); } catch (e) { showError(t("loading.pools"), e); return; }
    for (const p of pools) if (!live.pools.has(poolKey(p))) live.pools.set(poolKey(p), Object.assign({ queue: null }, p));
    const poolList = pools.map((p) => ({ pool: p.pool, name: p.name }));

    const builders = { ward: wardView, orders: ordersView, units: unitsView, charts: chartsView, admin: adminView };
    const names = TABS[role] || ["ward"];
    const tabs = $("tabs");
    const panels = {};
    const buttons = {};
    put(view, );
    // The ward panel comes first in the page, whatever the role's first view.
    const order = ["ward", ...names.filter((n) => n !== "ward")].filter((n) => names.includes(n));
    for (const name of order) {
      const tabId = "tab-" + name, panelId = "panel-" + name;
      const btn = h("button", { type: "button", role: "tab", id: tabId, "aria-controls": panelId,
        "aria-selected": "false", tabindex: "-1", data: { tab: name } }, t("tab." + name));
      buttons[name] = btn;
      const panel = h("section", { id: panelId, class: "panel", role: "tabpanel", "aria-labelledby": tabId,
        tabindex: "-1", hidden: true, data: { panel: name } });
      panels[name] = { el: panel, api: builders[name](panel, poolList) };
      view.append(panel);
    }
    for (const name of names) tabs.append(buttons[name]);
    tabs.hidden = false;

    const show = (name, focus) => {
      for (const [n, b] of Object.entries(buttons)) {
        const on = n === name;
        b.setAttribute("aria-selected", String(on));
        b.tabIndex = on ? 0 : -1;
        const was = !panels[n].el.hidden;
        panels[n].el.hidden = !on;
        const pa = panels[n].api || {};
        if (was && !on && pa.hidden) pa.hidden();
      }
      sessionStorage.setItem(TAB_KEY + "." + me.role, name);
      $("view-name").textContent = t("view." + name);
      document.title = docTitle();
      const pa = panels[name].api || {};
      if (pa.shown) pa.shown();
      if (focus) buttons[name].focus();
    };
    tabCtl = { names, show };
    window.__showTab = (name) => show(name);
    const saved = sessionStorage.getItem(TAB_KEY + "." + role);
    show(names.includes(saved) ? saved : names[0]);

    stream("/api/events", {
      pool: onPool,
      cluster: (c) => { for (const f of live.clusterSubs) f(c); },
      alarms: (a) => { live.alarms = a; for (const f of live.alarmSubs) f(a); },
    }, () => allBadges);
  }

  // The tab list's listeners are wired once (see the end); they act on the current tabs.
  let tabCtl = null;
  function onTabClick(ev) {
    const b = ev.target.closest("[role=tab]");
    if (b && tabCtl) tabCtl.show(b.dataset.tab);
  }
  // Arrow keys move between tabs (the WAI-ARIA tabs pattern); Tab goes on into the panel.
  function onTabKey(ev) {
    if (!tabCtl) return;
    const names = tabCtl.names;
    const i = names.indexOf(document.activeElement && document.activeElement.dataset.tab);
    if (i < 0) return;
    let j = null;
    if (ev.key === "ArrowRight" || ev.key === "ArrowDown") j = (i + 1) % names.length;
    else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") j = (i - 1 + names.length) % names.length;
    else if (ev.key === "Home") j = 0;
    else if (ev.key === "End") j = names.length - 1;
    if (j === null) return;
    ev.preventDefault();
    tabCtl.show(names[j], true);
  }

  let unackedAlarms = 0;
  function docTitle() {
    const tab = (me && sessionStorage.getItem(TAB_KEY + "." + me.role)) || "ward";
    return (unackedAlarms ? "(" + unackedAlarms + ") " : "") + "medkeeper — " + t("view." + tab);
  }

  // ---------- ward: alarms and the pools at a glance ----------
  function wardView(panel, poolList) {
    const grid = h("div", { class: "pools" });
    const alarms = alarmPanel();
    allBadges.push(alarms.live);
    live.alarmSubs.push(alarms.render);
    // Once the ward has named its patients, the alarm cards of NEWS2 alarms name them too.
    const ward = may("vitals") ? news2Ward(() => alarms.render(live.alarms)) : null;
    panel.append(h("h1", { class: "sr-only" }, t("view.ward")), alarms.el, ...(ward ? [ward.el] : []), grid);
    const sections = {};
    for (const p of poolList) {
      const sec = poolSection(live.pools.get(poolKey(p)));
      sections[poolKey(p)] = sec;
      allBadges.push(sec.live);
      grid.append(sec.el);
    }
    live.poolSubs.push((d) => { const sec = sections[poolKey(d)]; if (sec) sec.render(d); });
    return ward ? { shown: ward.shown, hidden: ward.hidden } : {};
  }

  function poolSection(p) {
    const hid = newId("pool");
    const lv = liveBadge(p.name);
    const summary = h("p", { class: "summary", "aria-live": "polite" });
    const body = h("div", { class: "pool-body" });
    const sec = h("section", { class: "pool", data: { pool: p.name, kind: p.pool }, "aria-labelledby": hid },
      h("div", { class: "pool-head" },
        h("h2", { id: hid }, p.name, " ", h("span", { class: "kind" }, t("kind." + (p.pool === "department" ? "department" : "equipment")))),
        lv),
      summary, body);
    const render = (data) => {
      summary.textContent = poolSummary(data, sec);
      put(body, utilBar(data), h("ul", { class: "units", "aria-label": t("units") }, (data.units || []).map(unitCard)),
        queueTable(data.queue));
    };
    render(p);
    return { el: sec, live: lv, render };
  }

  const STATUS_ICON = { "available": "●", "in-use": "◉", "maintenance": "▲", "offline": "○" };

  function utilisation(units) {
    const inUse = units.filter((u) => u.status === "in-use").length;
    const inService = units.filter((u) => u.status === "available" || u.status === "in-use").length;
    return { inUse, inService, out: units.length - inService, pct: inService ? Math.round((100 * inUse) / inService) : 0 };
  }

  function poolSummary(data, sec) {
    const u = utilisation(data.units || []);
    const waiting = data.queue ? data.queue.length : (data.queue_length || 0);
    if (sec) sec.dataset.waiting = String(waiting);
    return t("pool.summary", waiting, u.inUse, u.inService, u.out);
  }

  function utilBar(data) {
    const u = utilisation(data.units || []);
    return h("div", { class: "util" },
      h("div", { class: "util-label" }, h("span", {}, t("util")), h("strong", {}, u.inService ? u.pct + "%" : t("util.none"))),
      h("div", { class: "util-track", role: "progressbar", "aria-label": t("util"),
        "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": u.pct,
        "aria-valuetext": t("util.text", u.inUse, u.inService) },
        h("div", { class: "util-fill" + (u.pct >= 100 ? " full" : ""), style: { width: u.pct + "%" } })));
  }

  function statusBadge(status) {
    return h("span", { class: "badge st-badge" }, h("span", { "aria-hidden": "true" }, (STATUS_ICON[status] || "?") + " "), t("st." + status));
  }

  function unitCard(u) {
    return h("li", { class: "unit st-" + u.status, data: { unit: u.name, status: u.status } },
      h("div", { class: "unit-top" }, h("span", { class: "unit-name" }, u.name), statusBadge(u.status)),
      u.status === "in-use"
        ? h("div", { class: "unit-occ" }, t("unit.patient") + " ", patientLink(u.patient), h("br"), t("unit.order") + " ", idCode(u.order))
        : null,
      u.since_ms ? h("div", { class: "unit-since muted" }, t("unit.since", clock(u.since_ms))) : null,
      capsList(u.capabilities));
  }

  function capsList(caps) {
    return (caps || []).length ? h("ul", { class: "caps", "aria-label": t("caps") }, caps.map((c) => h("li", {}, c))) : null;
  }

  function patientLink(id) {
    if (!id) return "—";
    return h("a", { href: "/patient?id=" + encodeURIComponent(id), title: id }, short(id));
  }

  function prioBadge(p) {
    return h("span", { class: "badge prio prio-" + p, data: { priority: p } }, prioText(p));
  }

  function queueHead(withActions) {
    const cols = ["q.pos", "q.patient", "q.order", "q.priority", "q.waited", "q.est", "q.needs"];
    if (withActions) cols.push("q.actions");
    return h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, t(c)))));
  }

  function queueCells(r, patientCell) {
    return [
      h("td", { class: "num" }, r.position),
      h("td", {}, patientCell),
      h("td", {}, idCode(r.order)),
      h("td", {}, prioBadge(r.priority),
        r.effective_priority && r.effective_priority !== r.priority
          ? h("span", { class: "aged" }, " → ", prioBadge(r.effective_priority), h("span", { class: "sr-only" }, t("q.afterWait")))
          : null),
      h("td", { class: "num" }, h("span", { class: "waited", data: { base: r.waited_s || 0, at: Date.now() } }, duration(r.waited_s))),
      h("td", { class: "num" }, r.estimated_wait_s ? duration(r.estimated_wait_s) : t("q.next")),
      h("td", {}, (r.capabilities || []).join(", ") || "—"),
    ];
  }

  function queueTable(queue) {
    if (queue === null || queue === undefined) return h("p", { class: "muted" }, t("loading.queue"));
    if (!queue.length) return h("p", { class: "empty" }, t("q.empty"));
    const rows = queue.map((r) => h("tr", { data: { order: r.order } }, queueCells(r, patientLink(r.patient))));
    return h("div", { class: "table-wrap" },
      h("table", { class: "queue" }, h("caption", {}, t("q.caption")), queueHead(false), h("tbody", {}, rows)));
  }

  // "Waited" and "3 min ago" keep counting between events (a local clock, not a request).
  setInterval(() => {
    for (const el of document.querySelectorAll(".waited[data-at]")) {
      el.textContent = duration(Number(el.dataset.base) + (Date.now() - Number(el.dataset.at)) / 1000);
    }
    for (const el of document.querySelectorAll(".ago[data-ms]")) el.textContent = ago(Number(el.dataset.ms));
  }, 15000);

  // Keeps one element per key across updates, in `items`' order, so that focus, a half-typed
  // note or an open select survive the stream's next event. `create(item)` returns
  // {el, update(item)}.
  function keyed(container, map, items, keyOf, create) {
    const seen = new Set();
    items.forEach((it, i) => {
      const k = keyOf(it);
      seen.add(k);
      let c = map.get(k);
      if (!c) { c = create(it); map.set(k, c); }
      c.update(it);
      // Move an element only if it is out of place: moving takes the focus from it.
      if (container.children[i] !== c.el) container.insertBefore(c.el, container.children[i] || null);
    });
    for (const [k, c] of map) if (!seen.has(k)) { c.el.remove(); map.delete(k); }
  }

  // ---------- NEWS2: the ward's monitored patients, and one patient's vital signs ----------
  // Decision support, not a diagnosis: every NEWS2 shown says so. Risks in the RCP's colours
  // (low none or green, low–medium and medium amber and orange, high red), always written out.
  const RISKS = ["low", "low-medium", "medium", "high"];
  const riskOf = (r) => (RISKS.includes(r) ? r : "low");
  const DAY_MS = 24 * 3600 * 1000;
  const WARD_KEY = "medkeeper.ward";
  const WARD_REFRESH_MS = 30000;
  const wardNames = new Map(); // patient id -> name, from the ward view (alarm cards name patients)
  let wardTimer = null;
  let openVitals = null; // (patient id) => opens the patient's panel in the ward view
  // Each NEWS2 parameter, in chart order, and the vital sign it is scored from.
  const PARAMS = [
    ["respiration_rate", "respiratory_rate"], ["spo2", "spo2"], ["air_or_oxygen", "inhaled_oxygen"],
    ["systolic_bp", "systolic_bp"], ["pulse", "heart_rate"], ["consciousness", "consciousness"],
    ["temperature", "temperature"],
  ];
  // The small multiples: a default y range (widened to the plausible values, in `step`s) and the
  // range that scores 0 (SpO2: scale 1, or `band2` on scale 2).
  const VITAL_CHARTS = [
    { code: "respiratory_rate", unit: "unit.perMin", lo: 5, hi: 35, step: 5, band: [12, 20] },
    { code: "spo2", unit: "%", lo: 84, hi: 100, step: 2, band: [96, 100], band2: [88, 92] },
    { code: "heart_rate", unit: "unit.perMin", lo: 30, hi: 150, step: 10, band: [51, 90] },
    { code: "systolic_bp", unit: "mmHg", lo: 70, hi: 230, step: 10, band: [111, 219] },
    { code: "temperature", unit: "°C", lo: 34.5, hi: 40, step: 0.5, band: [36.1, 38.0], dp: 1 },
  ];
  const ACVPU = "ACVPU";

  function numText(v, dp) {
    const n = Number(v);
    if (dp) return n.toFixed(dp);
    return Number.isInteger(n) ? String(n) : n.toFixed(1);
  }
  function vitalValue(code, v) {
    if (code === "consciousness") return t("acvpu." + Math.max(0, Math.min(4, Math.round(v))));
    if (code === "inhaled_oxygen") return v > 0 ? t("vp.onOxygen") : t("vp.air");
    const spec = VITAL_CHARTS.find((c) => c.code === code) || {};
    const unit = spec.unit ? (spec.unit.startsWith("unit.") ? t(spec.unit) : spec.unit) : "";
    return numText(v, spec.dp) + " " + unit;
  }
  function riskBadge(risk) {
    const r = riskOf(risk);
    return h("span", { class: "badge n2-risk risk-" + r, data: { risk: r } }, t("n2.risk." + r));
  }
  function dsLabel() {
    return h("p", { class: "n2-label" }, h("span", { class: "n2-label-mark", "aria-hidden": "true" }, "i"), t("n2.label"));
  }
  // The chart's response and monitoring: the server's words in English, translated otherwise.
  function chartText(kind, c) {
    if (lang === "en" && c[kind === "resp" ? "response" : "monitoring"]) return c[kind === "resp" ? "response" : "monitoring"];
    const r = riskOf(c.risk);
    return t("n2." + kind + "." + (r === "low" && c.aggregate === 0 ? "low0" : r));
  }
  const xAt = (from, to, L, W) => (tm) => L + Math.max(0, Math.min(1, (tm - from) / (to - from))) * W;
  function timeTicks(from, to, x, y) {
    const g = [];
    for (let i = 0; i <= 4; i++) {
      const tm = from + ((to - from) * i) / 4;
      g.push(s("text", { x: x(tm), y, class: "tick", "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, clock(tm)));
    }
    return g;
  }

  // A ward row's 24 hours of NEWS2 in 120 × 32 pixels: the line, the 7 (high) threshold, and
  // the latest score's dot in its risk's colour (hollow if incomplete).
  function sparkline(trend, to) {
    const W = 120, H = 32, P = 4;
    const from = to - DAY_MS;
    const pts = (trend || []).filter((p) => p.at_ms >= from - 60000).sort((a, b) => a.at_ms - b.at_ms);
    const yMax = Math.max(9, ...pts.map((p) => p.aggregate + 1));
    const x = xAt(from, to, P, W - 2 * P);
    const y = (v) => P + (1 - v / yMax) * (H - 2 * P);
    const g = [s("line", { x1: P, x2: W - P, y1: y(7), y2: y(7), class: "thr" }),
      s("line", { x1: P, x2: W - P, y1: y(0), y2: y(0), class: "grid" })];
    if (pts.length > 1) {
      g.push(s("polyline", { points: pts.map((p) => x(p.at_ms).toFixed(1) + "," + y(p.aggregate).toFixed(1)).join(" "), class: "series" }));
    }
    const last = pts[pts.length - 1];
    if (last) {
      g.push(s("circle", { cx: x(last.at_ms), cy: y(last.aggregate), r: 3.2,
        class: "n2pt risk-" + riskOf(last.risk) + (last.complete ? "" : " incomplete") }));
    }
    const label = last
      ? t("n2.sparkAlt", pts.length, pts[0].aggregate, last.aggregate, Math.max(...pts.map((p) => p.aggregate)))
      : t("n2.sparkNone");
    return s("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, class: "spark", role: "img",
      "aria-label": label, data: { points: String(pts.length) } }, s("title", {}, label), g);
  }

  // The patient's stored NEWS2 scores over 24 hours, with the medium (5) and high (7) lines.
  function trendChart(trend, from, to) {
    const W = 480, H = 150, L = 28, R = 10, T = 8, B = 20;
    const pts = (trend || []).filter((p) => p.at_ms >= from - 60000).sort((a, b) => a.at_ms - b.at_ms);
    const yMax = Math.max(10, ...pts.map((p) => p.aggregate + 1));
    const x = xAt(from, to, L, W - L - R);
    const y = (v) => T + (1 - v / yMax) * (H - T - B);
    const g = [
      s("rect", { x: L, width: W - L - R, y: y(yMax), height: y(7) - y(yMax), class: "zone-high" }),
      s("rect", { x: L, width: W - L - R, y: y(7), height: y(5) - y(7), class: "zone-medium" }),
      s("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), class: "grid" }),
      s("line", { x1: L, x2: W - R, y1: y(5), y2: y(5), class: "thr" }),
      s("line", { x1: L, x2: W - R, y1: y(7), y2: y(7), class: "thr thr-high" }),
    ];
    for (const v of [0, 5, 7, yMax]) g.push(s("text", { x: L - 4, y: y(v) + 4, class: "tick", "text-anchor": "end" }, String(v)));
    g.push(...timeTicks(from, to, x, H - 5));
    if (pts.length > 1) {
      g.push(s("polyline", { points: pts.map((p) => x(p.at_ms).toFixed(1) + "," + y(p.aggregate).toFixed(1)).join(" "), class: "series" }));
    }
    for (const p of pts) {
      g.push(s("circle", { cx: x(p.at_ms), cy: y(p.aggregate), r: 4, class: "n2pt risk-" + riskOf(p.risk) + (p.complete ? "" : " incomplete") },
        s("title", {}, clock(p.at_ms) + " · NEWS2 " + p.aggregate + " · " + t("n2.risk." + riskOf(p.risk)) + (p.complete ? "" : " · " + t("n2.incomplete")))));
    }
    if (!pts.length) g.push(s("text", { x: (L + W) / 2, y: H / 2, class: "tick", "text-anchor": "middle" }, t("vp.noData")));
    const last = pts[pts.length - 1];
    const label = t("vp.trendAlt", pts.length, last ? last.aggregate + " (" + t("n2.risk." + riskOf(last.risk)) + ")" : "");
    return s("svg", { viewBox: "0 0 " + W + " " + H, class: "vchart", role: "img", "aria-label": label,
      data: { points: String(pts.length) } }, s("title", {}, label), g);
  }

  // One vital sign's 24 hours: dots joined by a line; a suspected artefact a cross, never
  // joined (clamped to the chart's edge if it lies outside); the range that scores 0 shaded.
  function vitalChart(spec, obs, from, to, scale) {
    const W = 320, H = 132, L = 36, R = 8, T = 8, B = 20;
    const ok = obs.filter((o) => !o.artefact), bad = obs.filter((o) => o.artefact);
    let lo = spec.lo, hi = spec.hi;
    for (const o of ok) { lo = Math.min(lo, o.value); hi = Math.max(hi, o.value); }
    lo = Math.floor(lo / spec.step) * spec.step;
    hi = Math.ceil(hi / spec.step) * spec.step;
    const x = xAt(from, to, L, W - L - R);
    const y = (v) => T + (1 - (Math.max(lo, Math.min(hi, v)) - lo) / (hi - lo)) * (H - T - B);
    const g = [];
    const band = scale === "scale2" && spec.band2 ? spec.band2 : spec.band;
    g.push(s("rect", { x: L, width: W - L - R, y: y(band[1]), height: Math.max(0, y(band[0]) - y(band[1])), class: "band" }));
    for (const v of [lo, lo + Math.round((hi - lo) / 2 / spec.step) * spec.step, hi]) {
      g.push(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
      g.push(s("text", { x: L - 4, y: y(v) + 4, class: "tick", "text-anchor": "end" }, numText(v, spec.dp)));
    }
    g.push(...timeTicks(from, to, x, H - 5));
    if (ok.length > 1) {
      g.push(s("polyline", { points: ok.map((o) => x(o.effective_ms).toFixed(1) + "," + y(o.value).toFixed(1)).join(" "), class: "series" }));
    }
    for (const o of ok) {
      g.push(s("circle", { cx: x(o.effective_ms), cy: y(o.value), r: 2.8, class: "pt" },
        s("title", {}, clock(o.effective_ms) + " · " + vitalValue(spec.code, o.value))));
    }
    for (const o of bad) {
      const cx = x(o.effective_ms), cy = y(o.value), d = 4.5;
      g.push(s("path", { d: "M" + (cx - d) + " " + (cy - d) + "L" + (cx + d) + " " + (cy + d) + "M" + (cx - d) + " " + (cy + d) + "L" + (cx + d) + " " + (cy - d),
        class: "artefact" }, s("title", {}, clock(o.effective_ms) + " · " + vitalValue(spec.code, o.value) + " · " + t("vp.artefactTitle", o.artefact))));
    }
    if (!obs.length) g.push(s("text", { x: (L + W) / 2, y: (H - B) / 2 + 4, class: "tick", "text-anchor": "middle" }, t("vp.noData")));
    const last = ok[ok.length - 1];
    const latest = last ? t("vp.latest", vitalValue(spec.code, last.value), clock(last.effective_ms)) : "";
    const label = t("vp.chartAlt", t("vt." + spec.code), ok.length, latest, bad.length);
    return s("svg", { viewBox: "0 0 " + W + " " + H, class: "vchart", role: "img", "aria-label": label }, s("title", {}, label), g);
  }

  // Consciousness (ACVPU letters; anything but A stands out) and air or oxygen (a filled dot
  // on oxygen, a hollow one on air) as markers on the same 24 hours.
  function markerChart(cons, oxy, from, to) {
    const W = 320, H = 78, L = 44, R = 8, B = 20;
    const x = xAt(from, to, L, W - L - R);
    const rows = [{ code: "consciousness", label: "ACVPU", y: 18, obs: cons }, { code: "inhaled_oxygen", label: "O₂", y: 42, obs: oxy }];
    const g = [];
    for (const r of rows) {
      g.push(s("line", { x1: L, x2: W - R, y1: r.y, y2: r.y, class: "grid" }));
      g.push(s("text", { x: L - 4, y: r.y + 4, class: "tick", "text-anchor": "end" }, r.label));
      const marks = r.obs.map((o) => {
        const cx = x(o.effective_ms);
        const title = s("title", {}, clock(o.effective_ms) + " · " + vitalValue(r.code, o.value));
        if (r.code === "consciousness") {
          const v = Math.max(0, Math.min(4, Math.round(o.value)));
          return s("g", { class: "mk cons" + (v > 0 ? " cons-bad" : "") }, title,
            s("circle", { cx, cy: r.y, r: 7 }), s("text", { x: cx, y: r.y + 4, "text-anchor": "middle" }, ACVPU[v]));
        }
        return s("g", { class: "mk " + (o.value > 0 ? "oxy-on" : "oxy-off") }, title, s("circle", { cx, cy: r.y, r: 5 }));
      });
      g.push(s("g", { data: { code: r.code, points: String(r.obs.length) } }, marks));
    }
    g.push(...timeTicks(from, to, x, H - 5));
    const lastOf = (obs, code) => (obs.length ? vitalValue(code, obs[obs.length - 1].value) : "—");
    const label = t("vp.markersAlt", lastOf(cons, "consciousness"), lastOf(oxy, "inhaled_oxygen"));
    return s("svg", { viewBox: "0 0 " + W + " " + H, class: "vchart", role: "img", "aria-label": label }, s("title", {}, label), g);
  }

  // A patient's vital signs and NEWS2: the score now with each parameter's score, the chart's
  // response and monitoring, the 24-hour NEWS2 trend and the 24-hour vital signs. `onClose`
  // (optional) closes it; Escape does too.
  function vitalsPanel(id, name, onClose) {
    const key = newId("vp");
    const title = h("h2", { id: key + "-h", tabindex: "-1" }, t("vp.title", name || id));
    const err = errorBox();
    const refreshBtn = h("button", { type: "button", class: "btn-secondary", data: { action: "refresh-vitals" } }, t("n2.refresh"));
    const closeBtn = onClose ? h("button", { type: "button", class: "btn-secondary", data: { action: "close-vitals" } }, t("vp.close")) : null;
    const nowBox = h("div", { class: "n2-now", "aria-live": "polite" }, h("p", { class: "muted" }, t("loading")));
    const trendBox = h("div", { class: "n2-trend" });
    const chartsBox = h("div", { class: "vital-charts" });
    const tableBody = h("tbody", {});
    const details = h("details", { class: "vital-table" }, h("summary", {}, t("vp.table")),
      h("div", { class: "table-wrap" }, h("table", { class: "queue" }, h("caption", { class: "sr-only" }, t("vp.vitals")),
        h("thead", {}, h("tr", {}, ["vp.when", "vp.param", "vp.value", "vp.note"].map((k) => h("th", { scope: "col" }, t(k))))), tableBody)));
    const el = h("section", { class: "vitals-panel", data: { vitalsFor: id }, "aria-labelledby": key + "-h" },
      h("div", { class: "pool-head" }, title, h("div", { class: "vp-actions" }, refreshBtn, closeBtn)),
      h("p", { class: "muted pt-meta" }, idCode(id)),
      dsLabel(), err, nowBox,
      h("h3", { class: "sub-h" }, t("vp.trend")), trendBox,
      h("h3", { class: "sub-h" }, t("vp.vitals")), chartsBox,
      h("p", { class: "vital-legend muted" },
        h("span", { class: "lg lg-pt", "aria-hidden": "true" }, "●"), " " + t("vp.legend.value") + " · ",
        h("span", { class: "lg lg-art", "aria-hidden": "true" }, "×"), " " + t("vp.legend.artefact") + " · ",
        h("span", { class: "lg lg-band", "aria-hidden": "true" }, "▮"), " " + t("vp.legend.band") + " · ",
        h("span", { class: "lg lg-thr", "aria-hidden": "true" }, "┄"), " " + t("vp.legend.threshold") + " · ",
        t("vp.legend.incomplete")),
      details);
    if (closeBtn) closeBtn.addEventListener("click", () => onClose());
    if (onClose) el.addEventListener("keydown", (ev) => { if (ev.key === "Escape") { ev.preventDefault(); onClose(); } });
    let vitals = [];
    const drawTable = () => {
      if (!details.open) return;
      put(tableBody, ...vitals.slice().reverse().slice(0, 500).map((o) => h("tr", { class: o.artefact ? "artefact-row" : "" },
        h("td", { class: "num" }, dateTime(o.effective_ms)), h("td", {}, t("vt." + o.code)),
        h("td", { class: "num" }, vitalValue(o.code, o.value)),
        h("td", {}, o.artefact ? t("vp.artefactTitle", o.artefact) : ""))));
    };
    details.addEventListener("toggle", drawTable);

    function drawNow(n, byId) {
      const c = n.current;
      if (!c) { put(nowBox, h("p", { class: "empty" }, t("vp.none"))); return; }
      const r = riskOf(c.risk);
      const scores = new Map((c.parameters || []).map((p) => [p.parameter, p.score]));
      const stale = new Map((c.stale || []).map((m) => [m.parameter, m]));
      const used = new Map();
      for (const oid of c.basis || []) { const o = byId.get(oid); if (o) used.set(o.code, o); }
      const rows = PARAMS.map(([p, code]) => {
        const sc = scores.get(p);
        let value, score = "—", state = "scored";
        if (sc !== undefined) {
          const o = used.get(code);
          value = o ? [vitalValue(code, o.value), " ", h("span", { class: "muted" }, clock(o.effective_ms))] : "—";
          score = h("span", { class: "badge n2-pscore score-" + Math.min(3, sc) }, String(sc));
        } else if (stale.has(p)) {
          state = "stale";
          value = h("span", { class: "n2-flag flag-stale" }, t("vp.staleP", dateTime(stale.get(p).last_ms)));
        } else {
          state = "missing";
          value = h("span", { class: "n2-flag flag-missing" }, t("vp.missing"));
        }
        return h("tr", { data: { parameter: p, state, score: sc === undefined ? "" : String(sc) } },
          h("th", { scope: "row" }, t("np." + p)), h("td", {}, value), h("td", { class: "num" }, score));
      });
      const dt = (k) => h("dt", {}, t(k));
      put(nowBox,
        h("div", { class: "n2-score risk-" + r, data: { aggregate: String(c.aggregate), risk: r } },
          h("span", { class: "n2-agg" }, String(c.aggregate)),
          h("span", { class: "n2-agg-label" }, "NEWS2 · " + t("vp.aggregate")),
          riskBadge(r),
          c.complete ? null : h("span", { class: "n2-flag flag-incomplete" }, t("n2.incomplete"))),
        h("div", { class: "n2-facts" },
          h("dl", { class: "alarm-meta" },
            dt("vp.risk"), h("dd", {}, riskBadge(r), c.complete ? "" : t("vp.lowerBound")),
            dt("vp.at"), h("dd", {}, agoEl(c.at_ms), " (" + dateTime(c.at_ms) + ")"),
            dt("vp.response"), h("dd", { class: "n2-response" }, chartText("resp", c)),
            dt("vp.monitoring"), h("dd", { class: "n2-monitoring" }, chartText("mon", c)),
            dt("vp.scale"), h("dd", {}, t("vp.scale." + (c.scale === "scale2" ? "scale2" : "scale1")))),
          c.red ? h("p", { class: "n2-red" }, t("vp.red")) : null),
        h("div", { class: "table-wrap n2-breakdown-wrap" },
          h("table", { class: "queue n2-breakdown" }, h("caption", {}, t("vp.breakdown")),
            h("thead", {}, h("tr", {}, ["vp.param", "vp.value", "vp.score"].map((k) => h("th", { scope: "col" }, t(k))))),
            h("tbody", {}, rows),
            h("tfoot", {}, h("tr", {}, h("th", { scope: "row" }, "NEWS2"), h("td", {}, riskBadge(r)),
              h("td", { class: "num" }, h("strong", {}, String(c.aggregate))))))));
    }

    function drawCharts(n) {
      const to = Date.now(), from = to - DAY_MS;
      const scale = n.current ? n.current.scale : "scale1";
      const of = (code) => vitals.filter((o) => o.code === code && o.effective_ms >= from - 60000);
      put(trendBox, h("figure", { class: "chart n2-trend-chart", data: { chart: "news2" } },
        h("figcaption", {}, h("strong", {}, "NEWS2"), " ", h("span", { class: "muted" }, t("vp.legend.threshold"))),
        trendChart(n.trend, from, to)));
      const figs = VITAL_CHARTS.map((spec) => {
        const obs = of(spec.code);
        const ok = obs.filter((o) => !o.artefact), bad = obs.length - ok.length;
        const last = ok[ok.length - 1];
        return h("figure", { class: "chart vital", data: { code: spec.code, points: String(ok.length), artefacts: String(bad) } },
          h("figcaption", {}, h("strong", {}, t("vt." + spec.code)), " ",
            h("span", { class: "muted" }, [last ? t("vp.latest", vitalValue(spec.code, last.value), clock(last.effective_ms)) : null,
              t("vp.count", ok.length), bad ? t("vp.artefacts", bad) : null].filter(Boolean).join(" · "))),
          vitalChart(spec, obs, from, to, scale));
      });
      const cons = of("consciousness"), oxy = of("inhaled_oxygen");
      figs.push(h("figure", { class: "chart vital markers", data: { code: "markers" } },
        h("figcaption", {}, h("strong", {}, t("vp.markers")), " ",
          h("span", { class: "muted" }, t("vt.consciousness") + " · " + t("vt.inhaled_oxygen"))),
        markerChart(cons, oxy, from, to)));
      put(chartsBox, ...figs);
    }

    let busy = null;
    function refresh() {
      if (busy) return busy;
      const q = "/api/patients/" + encodeURIComponent(id);
      busy = act(refreshBtn, err, t("vp.do"), null,
        () => Promise.all([api(q + "/news2"), api(q + "/vitals?since_ms=" + (Date.now() - DAY_MS) + "&limit=10000")]),
        ([n, v]) => {
          vitals = (Array.isArray(v) ? v : []).slice().sort((a, b) => a.effective_ms - b.effective_ms);
          const byId = new Map(vitals.map((o) => [o.id, o]));
          drawNow(n, byId);
          drawCharts(n);
          drawTable();
          el.dataset.loaded = String(Date.now());
          el.dataset.risk = n.current ? riskOf(n.current.risk) : "";
        }).finally(() => { busy = null; });
      return busy;
    }
    refreshBtn.addEventListener("click", () => refresh());
    refresh();
    return { el, refresh, focus: () => title.focus() };
  }

  // The Ward tab's monitored patients: the latest NEWS2 of each, highest risk first, a ward
  // filter; read again when an alarms event arrives (a NEWS2 alarm is scoped `patient.<id>`)
  // and every 30 s while the tab is shown. A patient's name opens their vital signs below.
  function news2Ward(onNames) {
    const hid = "n2w-h";
    let filter = sessionStorage.getItem(WARD_KEY) || "";
    const known = new Set();
    const wardSel = h("select", { id: "n2-ward", name: "ward" });
    let wardsSig = null;
    const drawWards = () => {
      const wards = [...new Set([...known, ...(filter ? [filter] : [])])].sort();
      const sig = wards.join("\n") + "|" + filter;
      if (sig === wardsSig || document.activeElement === wardSel) return;
      wardsSig = sig;
      put(wardSel, h("option", { value: "" }, t("n2.allWards")),
        wards.map((w) => h("option", { value: w, selected: w === filter }, w)));
    };
    drawWards();
    const refreshBtn = h("button", { type: "button", class: "btn-secondary", data: { action: "ward-refresh" } }, t("n2.refresh"));
    const summary = h("p", { class: "summary", "aria-live": "polite" }, t("loading"));
    const err = errorBox();
    const tbody = h("tbody", {});
    const rows = new Map();
    const table = h("div", { class: "table-wrap", hidden: true }, h("table", { class: "queue ward-table" },
      h("caption", { class: "sr-only" }, t("n2.caption")),
      h("thead", {}, h("tr", {}, ["n2.col.patient", "n2.col.ward", "n2.col.score", "n2.col.risk", "n2.col.trend", "n2.col.at", "n2.col.flags"]
        .map((k) => h("th", { scope: "col" }, t(k))))), tbody));
    const empty = h("p", { class: "empty", hidden: true });
    const slot = h("div", { class: "vitals-slot" });
    const el = h("section", { id: "news2-ward", class: "news2-ward", "aria-labelledby": hid },
      h("div", { class: "pool-head" }, h("h2", { id: hid }, t("n2.wardTitle")),
        h("div", { class: "inline-form ward-filter" }, h("label", { for: "n2-ward" }, t("n2.ward")), wardSel, refreshBtn)),
      dsLabel(), summary, err, table, empty, slot);

    let panel = null, panelFor = null, opener = null;
    const markOpen = () => { for (const [k, r] of rows) r.el.dataset.open = k === panelFor ? "1" : ""; };
    const closePanel = () => {
      panel = null; panelFor = null;
      put(slot);
      markOpen();
      const back = opener && opener.isConnected ? opener : rows.size ? [...rows.values()][0].btn : null;
      if (back) back.focus();
    };
    const open = (pid, name, btn) => {
      opener = btn || null;
      panelFor = pid;
      panel = vitalsPanel(pid, name || wardNames.get(pid) || pid, closePanel);
      put(slot, panel.el);
      markOpen();
      panel.focus();
    };
    openVitals = (pid) => {
      if (tabCtl && tabCtl.names.includes("ward")) tabCtl.show("ward");
      open(pid, wardNames.get(pid), null);
    };

    const row = () => {
      const btn = h("button", { type: "button", class: "btn-link n2-name", data: { action: "open-vitals" } });
      const wardCell = h("td", {}), scoreCell = h("td", { class: "num n2-agg-cell" }), riskCell = h("td", {}),
        trendCell = h("td", { class: "n2-spark-cell" }), atCell = h("td", { class: "num" }), flagCell = h("td", {});
      const tr = h("tr", {}, h("td", {}, btn), wardCell, scoreCell, riskCell, trendCell, atCell, flagCell);
      let cur = null;
      btn.addEventListener("click", () => open(cur.patient, cur.name, btn));
      return {
        el: tr, btn,
        update(r) {
          cur = r;
          const risk = riskOf(r.risk);
          tr.className = "n2-row risk-" + risk;
          Object.assign(tr.dataset, { patient: r.patient, risk, aggregate: String(r.aggregate),
            complete: r.complete ? "1" : "", stale: r.stale ? "1" : "", open: r.patient === panelFor ? "1" : "" });
          btn.textContent = r.name || r.patient;
          btn.title = r.patient;
          wardCell.textContent = r.ward || "—";
          put(scoreCell, h("strong", {}, String(r.aggregate)));
          put(riskCell, riskBadge(risk));
          put(trendCell, sparkline(r.trend, Date.now()));
          put(atCell, agoEl(r.at_ms), h("br"), h("span", { class: "muted" }, clock(r.at_ms)));
          const flags = [];
          if (!r.complete) flags.push(h("span", { class: "n2-flag flag-incomplete", title: t("n2.incompleteHint") }, t("n2.incomplete")));
          if (r.stale) flags.push(h("span", { class: "n2-flag flag-stale" }, t("n2.stale")));
          put(flagCell, flags.length ? h("span", { class: "n2-flags" }, flags) : h("span", { class: "muted" }, "—"));
        },
      };
    };

    const draw = (list) => {
      err.hidden = true;
      list = (Array.isArray(list) ? list : []).slice().sort((a, b) =>
        RISKS.indexOf(riskOf(b.risk)) - RISKS.indexOf(riskOf(a.risk)) || b.aggregate - a.aggregate
        || (a.patient < b.patient ? -1 : a.patient > b.patient ? 1 : 0));
      let named = false;
      for (const r of list) {
        if (r.name && wardNames.get(r.patient) !== r.name) { wardNames.set(r.patient, r.name); named = true; }
        if (r.ward) known.add(r.ward);
      }
      if (named && onNames) onNames();
      drawWards();
      keyed(tbody, rows, list, (r) => r.patient, row);
      table.hidden = !list.length;
      empty.hidden = !!list.length;
      empty.textContent = filter ? t("n2.noneWard", filter) : t("n2.none");
      const high = list.filter((r) => riskOf(r.risk) === "high").length;
      summary.textContent = t("n2.summary", list.length, high, clock(Date.now()));
      el.dataset.count = String(list.length);
      el.dataset.loaded = String(Date.now());
    };

    let inflight = null, again = false, visible = false;
    function load() {
      if (inflight) { again = true; return inflight; }
      const q = filter ? "?ward=" + encodeURIComponent(filter) : "";
      inflight = api("/api/ward" + q).then(draw, (e) => {
        err.textContent = errText(t("n2.doWard"), e);
        err.hidden = false;
      }).then(() => (panel ? panel.refresh() : null)).finally(() => {
        inflight = null;
        if (again) { again = false; load(); }
      });
      return inflight;
    }
    refreshBtn.addEventListener("click", () => act(refreshBtn, err, t("n2.doWard"), t("n2.refreshBusy"), () => load()));
    wardSel.addEventListener("change", () => {
      filter = wardSel.value;
      sessionStorage.setItem(WARD_KEY, filter);
      load();
    });
    live.alarmSubs.push(() => { if (visible) load(); });
    clearInterval(wardTimer);
    wardTimer = setInterval(() => { if (visible && el.isConnected && !document.hidden) load(); }, WARD_REFRESH_MS);
    return {
      el,
      shown: () => { visible = true; load(); },
      hidden: () => { visible = false; },
    };
  }

  // ---------- order actions, by state and role ----------
  const PRIORITIES = ["stat", "asap", "urgent", "routine"];

  // The controls for one order (or a queue row taken as a queued order), only those the role
  // may use in the order's state. `onDone(order)` gets the server's answer.
  function orderActions(o, onDone) {
    const box = h("div", { class: "order-actions", data: { actionsFor: o.id } });
    const err = errorBox();
    const path = "/api/orders/" + encodeURIComponent(o.id);
    const button = (action, label, cls) => h("button", { type: "button", class: cls || "", data: { action } }, label);
    const post = (suffix, body) => () => api(path + suffix, { method: "POST", body: body === undefined ? undefined : body() });
    const items = [];
    const st = o.state;

    if (st === "queued" && may("priority")) {
      const sel = h("select", { name: "priority", "aria-label": t("act.priority.label") },
        PRIORITIES.map((p) => h("option", { value: p, selected: p === o.priority }, prioText(p))));
      const b = button("priority", t("act.priority"), "btn-secondary");
      b.addEventListener("click", () => act(b, err, t("do.priority"), t("act.priority.busy"),
        post("/priority", () => ({ priority: sel.value })), onDone));
      items.push(h("span", { class: "inline-form" }, sel, b));
    }
    if (st === "queued" && may("call")) {
      const pool = live.pools.get(poolKey(o.pool || {}));
      const units = pool ? (pool.units || []) : [];
      const need = o.capabilities || [];
      const sel = h("select", { name: "unit", "aria-label": t("act.call.unit") },
        h("option", { value: "" }, t("act.call.any")),
        units.filter((u) => u.status === "available" && need.every((c) => (u.capabilities || []).includes(c)))
          .map((u) => h("option", { value: u.name }, u.name)),
        // Units not free now are listed too (the server explains why it refuses them).
        units.filter((u) => !(u.status === "available" && need.every((c) => (u.capabilities || []).includes(c))))
          .map((u) => h("option", { value: u.name }, u.name + " (" + t("st." + u.status) + ")")));
      const b = button("call", t("act.call"));
      b.addEventListener("click", () => act(b, err, t("do.call"), t("act.call.busy"),
        post("/call", () => (sel.value ? { unit: sel.value } : {})), onDone));
      items.push(h("span", { class: "inline-form" }, sel, b));
    }
    if (st === "called" && may("start")) {
      const b = button("start", t("act.start"));
      b.addEventListener("click", () => act(b, err, t("do.start"), t("act.start.busy"), post("/start"), onDone));
      items.push(b);
    }
    if (st === "called" && may("noShow")) {
      const b = button("no-show", t("act.noshow"), "btn-secondary");
      b.addEventListener("click", () => act(b, err, t("do.noshow"), t("act.noshow.busy"), post("/no-show"), onDone));
      items.push(b);
    }
    if (st === "in-progress" && may("complete")) {
      const b = button("complete", t("act.complete"));
      b.addEventListener("click", () => act(b, err, t("do.complete"), t("act.complete.busy"), post("/complete"), onDone));
      items.push(b);
    }
    if (st === "completed") {
      if (may("report")) {
        const ta = h("textarea", { name: "report", rows: 3, maxlength: 20000, id: newId("report") });
        const b = h("button", { type: "submit", data: { action: "report" } }, t("act.report"));
        const form = h("form", { class: "report-form" }, field(t("act.report.label"), ta, { wide: true }), b);
        form.addEventListener("submit", (ev) => {
          ev.preventDefault();
          act(b, err, t("do.report"), t("act.report.busy"), post("/report", () => ({ text: ta.value })), onDone);
        });
        items.push(form);
      } else {
        items.push(h("span", { class: "muted" }, t("act.report.who")));
      }
    }
    if ((st === "queued" || st === "called") && may("cancel")) {
      const b = button("cancel", t("act.cancel"), "btn-danger");
      b.addEventListener("click", () => act(b, err, t("do.cancel"), t("act.cancel.busy"), post("/cancel"), onDone));
      items.push(b);
    }
    if (!items.length) return null;
    box.append(...items, err);
    return box;
  }

  // Orders' states as last read (the pools' views name a unit's order but not whether it has
  // started): read again whenever the order's pool changes, and from our own actions' answers.
  const orderCache = new Map();
  const orderReads = new Map();
  function readOrder(id) {
    if (orderReads.has(id)) return orderReads.get(id);
    const p = api("/api/orders/" + encodeURIComponent(id)).then((d) => {
      orderCache.set(id, d.order);
      return d;
    }).finally(() => orderReads.delete(id));
    orderReads.set(id, p);
    return p;
  }

  // ---------- orders: find or register a patient, order, re-prioritise, cancel, call ----------
  function ordersView(panel, poolList) {
    const findErr = errorBox();
    const pid = h("input", { name: "patient", required: true, spellcheck: "false", autocomplete: "off", pattern: "[A-Za-z0-9._\\-]{1,64}" });
    const findBtn = h("button", { type: "submit", data: { action: "find" } }, t("pt.findBtn"));
    const findForm = h("form", { class: "card-form", "aria-labelledby": "find-h" },
      h("h2", { id: "find-h" }, t("pt.find")), field(t("pt.id"), pid), findBtn, findErr);

    const regErr = errorBox();
    const name = h("input", { name: "name", required: true, autocomplete: "off", maxlength: 200 });
    const birth = h("input", { name: "birth_date", type: "date", min: "1900-01-01" });
    const regBtn = h("button", { type: "submit", data: { action: "register" } }, t("pt.registerBtn"));
    const regForm = may("register")
      ? h("form", { class: "card-form", "aria-labelledby": "reg-h" },
        h("h2", { id: "reg-h" }, t("pt.register")), field(t("pt.name"), name), field(t("pt.birth"), birth), regBtn, regErr)
      : null;

    const patientBox = h("section", { class: "patient-card", "aria-live": "polite", "aria-label": t("pt.orders") },
      h("p", { class: "muted" }, t("pt.none")));
    let current = null; // {patient, orders}
    const orderCards = new Map();
    let orderList = null, titleEl = null, orderFormBox = null;

    function drawPatient(d) {
      const first = !current || !d.patient || current.patient.id !== d.patient.id;
      current = d;
      if (first) {
        orderCards.clear();
        titleEl = h("h2", { tabindex: "-1" });
        orderList = h("ul", { class: "order-list" });
        orderFormBox = may("order") ? orderForm(d.patient.id, poolList, () => refreshPatient()) : null;
        put(patientBox, titleEl,
          h("p", { class: "muted pt-meta" }, idCode(d.patient.id),
            d.patient.birth_date ? " · " + t("pt.born", calendarDate(d.patient.birth_date)) : "",
            " · ", h("a", { href: "/patient?id=" + encodeURIComponent(d.patient.id) }, t("pt.page"))),
          may("vitals") ? vitalsToggle(d.patient) : null,
          orderFormBox,
          h("h3", {}, t("pt.orders")), orderList);
        patientBox.dataset.patient = d.patient.id;
      }
      titleEl.textContent = t("pt.title", d.patient.name);
      const orders = (d.orders || []).slice().sort((a, b) => b.created_ms - a.created_ms);
      if (!orders.length) { put(orderList, h("li", { class: "muted" }, t("pt.noOrders"))); orderCards.clear(); return; }
      if (orderList.firstChild && !orderList.firstChild.dataset.order) put(orderList, );
      keyed(orderList, orderCards, orders, (o) => o.id, orderCard);
    }

    // One order of the open patient: its state, unit, and what the role may do now. Redrawn
    // only when the order changed.
    function orderCard(o) {
      const el = h("li", { class: "order-card", data: { order: o.id } });
      let seen = "";
      return {
        el,
        update(o2) {
          const sig = o2.state + "|" + o2.priority + "|" + o2.assigned + "|" + o2.updated_ms;
          if (sig === seen) return;
          seen = sig;
          el.dataset.state = o2.state;
          el.className = "order-card os-" + o2.state;
          put(el, 
            h("div", { class: "order-top" },
              h("strong", {}, (o2.pool && o2.pool.name) || "?"), " ", prioBadge(o2.priority), " ",
              h("span", { class: "badge os-badge" }, stateText(o2.state)),
              o2.assigned ? h("span", { class: "order-unit" }, " · " + t("ord.unit") + " " + o2.assigned) : null),
            h("p", { class: "order-meta muted" }, idCode(o2.id), " · ", t("ord.created") + " " + dateTime(o2.created_ms),
              (o2.capabilities || []).length ? " · " + o2.capabilities.join(", ") : "",
              o2.reason ? h("span", { class: "order-reason" }, " · " + o2.reason) : null),
            orderActions(o2, () => refreshPatient()));
        },
      };
    }

    let refreshing = null, again = false;
    async function refreshPatient() {
      if (!current || !current.patient) return;
      if (refreshing) { again = true; return refreshing; }
      const id = current.patient.id;
      refreshing = api("/api/patients/" + encodeURIComponent(id)).then((d) => {
        if (current && current.patient && current.patient.id === id && d.patient) drawPatient(d);
      }, (e) => showError(t("do.find"), e)).finally(() => {
        refreshing = null;
        if (again) { again = false; refreshPatient(); }
      });
      return refreshing;
    }
    function openPatient(id, btn) {
      return act(btn || findBtn, findErr, t("do.find"), btn ? null : t("pt.findBusy"),
        () => api("/api/patients/" + encodeURIComponent(id)),
        (d) => {
          if (!d.patient) { findErr.textContent = errText(t("do.find"), { message: id + " ?", code: "not_found" }); findErr.hidden = false; return; }
          current = null;
          drawPatient(d);
          titleEl.focus();
        });
    }
    findForm.addEventListener("submit", (ev) => { ev.preventDefault(); openPatient(pid.value.trim()); });
    if (regForm) regForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const body = { name: name.value };
      if (birth.value) body.birth_date = birth.value;
      act(regBtn, regErr, t("do.register"), t("pt.registerBusy"), () => api("/api/patients", { method: "POST", body }),
        (p) => { name.value = ""; birth.value = ""; pid.value = p.id; current = null; drawPatient({ patient: p, orders: [], queue: [] }); titleEl.focus(); });
    });

    // The open patient's orders follow their pools' changes (called, started elsewhere…):
    // read again, at most one read at a time, when a pool the patient has an open order in changes.
    live.poolSubs.push((d) => {
      if (!current || !current.patient) return;
      const open = (current.orders || []).filter((o) => !["reported", "cancelled", "no-show"].includes(o.state));
      if (open.some((o) => poolKey(o.pool || {}) === poolKey(d))) refreshPatient();
    });

    // Every pool's queue, with the actions the role may take on a waiting order.
    const queues = h("div", { class: "pools queues" });
    for (const p of poolList) queues.append(queuePanel(p, (id, btn) => openPatient(id, btn)).el);

    panel.append(h("h1", { class: "sr-only" }, t("view.orders")),
      h("div", { class: "orders-top" }, h("div", { class: "forms" }, findForm, regForm), patientBox),
      h("h2", { class: "section-h" }, t("ord.queues")), queues);
    return {};
  }

  // The patient card's "Vital signs and NEWS2": opens (and closes) the patient's panel in the card.
  function vitalsToggle(patient) {
    const slot = h("div", { class: "vitals-slot" });
    const btn = h("button", { type: "button", class: "btn-secondary", data: { action: "vitals" }, "aria-expanded": "false" }, t("vp.open"));
    let open = false;
    const close = () => { open = false; put(slot); btn.setAttribute("aria-expanded", "false"); btn.focus(); };
    btn.addEventListener("click", () => {
      if (open) { close(); return; }
      open = true;
      const vp = vitalsPanel(patient.id, patient.name, close);
      put(slot, vp.el);
      btn.setAttribute("aria-expanded", "true");
      vp.focus();
    });
    return h("div", { class: "pt-vitals" }, h("p", { class: "pt-actions" }, btn), slot);
  }

  function orderForm(patientId, poolList, onCreated) {
    const err = errorBox();
    const pool = h("select", { name: "pool", required: true },
      poolList.map((p) => h("option", { value: poolKey(p) }, p.name + " (" + t("kind." + p.pool) + ")")));
    const prio = h("select", { name: "priority" }, PRIORITIES.map((p) => h("option", { value: p, selected: p === "routine" }, prioText(p))));
    const capsBox = h("fieldset", { class: "caps-choice" });
    const reason = h("input", { name: "reason", autocomplete: "off", maxlength: 2000 });
    const submit = h("button", { type: "submit", data: { action: "order" } }, t("ord.submit"));
    const drawCaps = () => {
      const p = live.pools.get(pool.value);
      const caps = [...new Set(((p && p.units) || []).flatMap((u) => u.capabilities || []))].sort();
      put(capsBox, h("legend", {}, t("ord.caps")),
        ...(caps.length ? caps.map((c) => {
          const id = newId("cap");
          return h("span", { class: "check" }, h("input", { type: "checkbox", id, name: "cap", value: c }), h("label", { for: id }, c));
        }) : [h("span", { class: "muted" }, t("ord.noCaps"))]));
    };
    pool.addEventListener("change", drawCaps);
    drawCaps();
    const form = h("form", { class: "card-form order-form", "aria-labelledby": "ord-h" },
      h("h3", { id: "ord-h" }, t("ord.new")), field(t("ord.pool"), pool), field(t("ord.priority"), prio), capsBox,
      field(t("ord.reason"), reason, { wide: true }), submit, err);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const body = {
        patient: patientId, pool: pool.value, priority: prio.value, reason: reason.value,
        capabilities: [...capsBox.querySelectorAll("input:checked")].map((c) => c.value),
      };
      act(submit, err, t("do.order"), t("ord.busy"), () => api("/api/orders", { method: "POST", body }),
        (o) => { reason.value = ""; onCreated(o); });
    });
    return form;
  }

  // One pool's queue with per-row actions (keyed rows: an open select survives updates).
  function queuePanel(p, openPatient) {
    const hid = newId("qh");
    const q = actionQueue(openPatient);
    const summary = h("p", { class: "summary" });
    const el = h("section", { class: "pool queue-panel", data: { qpool: p.name }, "aria-labelledby": hid },
      h("h3", { id: hid }, p.name, " ", h("span", { class: "kind" }, t("kind." + p.pool))), summary, q.el);
    const render = (d) => { summary.textContent = poolSummary(d); q.render(d); };
    render(live.pools.get(poolKey(p)) || p);
    live.poolSubs.push((d) => { if (poolKey(d) === poolKey(p)) render(d); });
    return { el };
  }

  // A queue table whose rows carry the actions the role may take on a waiting order;
  // `openPatient(id, button)` opens a patient in the orders view (or null: a plain link).
  function actionQueue(openPatient) {
    const tbody = h("tbody", {});
    const rows = new Map();
    const empty = h("p", { class: "empty" }, t("q.empty"));
    const loading = h("p", { class: "muted" }, t("loading.queue"));
    const table = h("div", { class: "table-wrap", hidden: true }, h("table", { class: "queue" },
      h("caption", { class: "sr-only" }, t("q.caption")), queueHead(true), tbody));
    empty.hidden = true;
    const el = h("div", { class: "action-queue" }, loading, table, empty);
    let d = null, unitsSig = "";
    const render = (view) => {
      if (view.queue === null || view.queue === undefined) return;
      d = view;
      loading.hidden = true;
      const q = d.queue;
      table.hidden = !q.length;
      empty.hidden = !!q.length;
      unitsSig = (d.units || []).map((u) => u.name + u.status).join();
      keyed(tbody, rows, q, (r) => r.order, () => {
        const tr = h("tr", { data: { qorder: "" } });
        const actionsCell = h("td", { class: "actions-cell" });
        let sig = "", actSig = "", pending = null;
        // The actions are redrawn only when what they offer changed, and never under the
        // user's hands (a select open, a request under way): then once focus leaves the row.
        const drawActions = (r2) => {
          const o = { id: r2.order, state: "queued", priority: r2.priority, pool: { pool: d.pool, name: d.name }, capabilities: r2.capabilities };
          put(actionsCell, orderActions(o, () => {}) || "");
        };
        tr.addEventListener("focusout", () => {
          setTimeout(() => {
            if (pending && !tr.contains(document.activeElement) && !tr.querySelector("[aria-busy]")) { drawActions(pending); pending = null; }
          }, 0);
        });
        return {
          el: tr,
          update(r2) {
            tr.dataset.qorder = r2.order;
            const s2 = [r2.position, r2.priority, r2.effective_priority, r2.estimated_wait_s, r2.waited_s].join("|");
            if (s2 !== sig) {
              sig = s2;
              let who = patientLink(r2.patient);
              if (openPatient) {
                who = h("button", { type: "button", class: "btn-link", data: { action: "open" }, title: r2.patient }, short(r2.patient));
                who.addEventListener("click", () => openPatient(r2.patient, who));
              }
              const cells = queueCells(r2, who);
              // The figures' cells are replaced one by one: the actions' cell (and its focus) stays.
              if (!tr.cells.length) tr.append(...cells, actionsCell);
              else cells.forEach((c, i) => tr.replaceChild(c, tr.cells[i]));
            }
            const a2 = r2.priority + "|" + unitsSig;
            if (a2 !== actSig) {
              actSig = a2;
              if (actionsCell.contains(document.activeElement) || actionsCell.querySelector("[aria-busy]")) pending = r2;
              else { pending = null; drawActions(r2); }
            }
          },
        };
      });
    };
    return { el, render };
  }

  // ---------- units: the technician's view ----------
  function unitsView(panel, poolList) {
    const done = new Map(); // orders completed on this page, until reported
    const doneList = h("ul", { class: "order-list" });
    const doneBox = h("section", { class: "pool done-box", "aria-labelledby": "done-h" },
      h("h2", { id: "done-h" }, t("u.done")), h("p", { class: "muted" }, t("u.doneHint")), doneList);
    const drawDone = () => {
      const items = [...done.values()].filter((o) => o.state === "completed");
      if (!items.length) { put(doneList, h("li", { class: "muted" }, t("u.doneEmpty"))); return; }
      put(doneList, ...items.map((o) => h("li", { class: "order-card os-" + o.state, data: { order: o.id, state: o.state } },
        h("div", { class: "order-top" }, h("strong", {}, o.pool.name), " ", idCode(o.id), " ", h("span", { class: "badge os-badge" }, stateText(o.state)),
          o.assigned ? " · " + o.assigned : ""),
        orderActions(o, (o2) => { done.set(o2.id, o2); drawDone(); }))));
    };
    drawDone();
    const onFinished = (o) => { if (o && o.state === "completed") { done.set(o.id, o); drawDone(); } };
    const grid = h("div", { class: "pools" });
    for (const p of poolList) grid.append(workPool(p, onFinished).el);
    panel.append(h("h1", { class: "sr-only" }, t("view.units")), grid, doneBox);
    return {};
  }

  function workPool(p, onFinished) {
    const hid = newId("wp");
    const summary = h("p", { class: "summary" });
    const list = h("ul", { class: "work-units", "aria-label": t("units") });
    const cards = new Map();
    const queue = actionQueue(null);
    const el = h("section", { class: "pool work-pool", data: { tpool: p.name }, "aria-labelledby": hid },
      h("div", { class: "pool-head" }, h("h2", { id: hid }, p.name, " ", h("span", { class: "kind" }, t("kind." + p.pool))), null),
      summary, list, h("h3", { class: "sub-h" }, t("q.caption")), queue.el);
    let last = null;
    const render = (d) => {
      last = d;
      summary.textContent = poolSummary(d);
      keyed(list, cards, d.units || [], (u) => u.name, (u) => workUnit(d, u, onFinished));
      queue.render(d);
    };
    render(live.pools.get(poolKey(p)) || p);
    live.poolSubs.push((d) => { if (poolKey(d) === poolKey(p)) render(d); });
    return { el, rerender: () => last && render(last) };
  }

  // A unit at work: its status (and the control to set it), who is called to it or in it, and
  // start / complete / no-show.
  function workUnit(pool, u0, onFinished) {
    const el = h("li", { class: "unit work-unit", data: { tunit: u0.name } });
    const err = errorBox();
    const top = h("div", { class: "unit-top" });
    const occ = h("div", { class: "unit-occ" });
    let statusForm = null, sel = null;
    if (may("unitStatus")) {
      sel = h("select", { name: "status", id: newId("us") },
        ["available", "maintenance", "offline"].map((v) => h("option", { value: v }, t("st." + v))));
      const b = h("button", { type: "submit", class: "btn-secondary", data: { action: "set-status" } }, t("u.set"));
      statusForm = h("form", { class: "inline-form status-form" }, h("label", { for: sel.id }, t("u.status")), sel, b);
      statusForm.addEventListener("submit", (ev) => {
        ev.preventDefault();
        act(b, err, t("do.status"), t("u.setBusy"), () => api("/api/pools/" + encodeURIComponent(pool.pool) + ":" + encodeURIComponent(pool.name) +
          "/units/" + encodeURIComponent(u0.name) + "/status", { method: "PUT", body: { status: sel.value } }),
        // Our answer is shown at once, unless the stream already brought a later state.
        (u) => { if (u && u.status && (u.since_ms || 0) >= lastSince) card.update(Object.assign({ name: u0.name }, u), true); });
      });
    }
    el.append(top, occ, statusForm, err);
    let sig = "", shownStatus = null, lastSince = 0;
    const card = {
      el,
      update(u, force) {
        lastSince = Math.max(lastSince, u.since_ms || 0);
        el.className = "unit work-unit st-" + u.status;
        el.dataset.status = u.status;
        put(top, h("span", { class: "unit-name" }, u.name), statusBadge(u.status));
        // The select follows the unit unless someone is choosing in it.
        if (sel && (shownStatus !== u.status || force) && document.activeElement !== sel) {
          sel.value = u.status === "in-use" ? "available" : u.status;
          shownStatus = u.status;
        }
        if (sel) sel.disabled = u.status === "in-use";
        const s2 = u.status + "|" + (u.order || "") + "|" + (u.since_ms || 0);
        if (s2 === sig && !force) { if (u.order) refresh(u); return; }
        sig = s2;
        if (u.status !== "in-use" || !u.order) {
          put(occ, h("span", { class: "muted" }, u.since_ms ? t("unit.since", clock(u.since_ms)) : ""), capsList(u.capabilities) || "");
          return;
        }
        drawOcc(u, orderCache.get(u.order));
        refresh(u);
      },
    };
    const drawOcc = (u, o) => {
      const state = o && o.id === u.order ? o.state : null;
      el.dataset.orderState = state || "";
      put(occ, 
        h("div", { class: "occ-line" },
          h("span", { class: "badge os-badge" }, state === "called" ? t("u.calledPt") : state === "in-progress" ? t("u.inProgress")
            : state ? stateText(state) : t("u.stateUnknown")),
          " ", t("unit.patient") + " ", patientLink(u.patient), " · ", t("unit.order") + " ", idCode(u.order)),
        u.since_ms ? h("div", { class: "unit-since muted" }, t("unit.since", clock(u.since_ms))) : null,
        state ? orderActions(o, (o2) => {
          orderCache.set(o2.id, o2);
          if (["completed", "no-show", "cancelled", "queued"].includes(o2.state)) onFinished(o2);
          if (u.order === o2.id) drawOcc(u, o2);
        }) : null);
    };
    const refresh = (u, tries = 0) => {
      readOrder(u.order).then((d) => {
        const o = d.order;
        const prev = el.dataset.orderState;
        if (el.isConnected && o.state !== prev && occ.querySelector("[data-actions-for]")?.contains(document.activeElement) !== true) drawOcc(u, o);
        else if (o.state !== prev) drawOcc(u, o);
        // The tree gives the unit first and the store records the call just after: a unit
        // in use by an order the store still has queued is read again shortly (no pool event
        // follows the store's write).
        if (o.state === "queued" && tries < 20 && el.isConnected) setTimeout(() => refresh(u, tries + 1), 300);
      }, () => {});
    };
    return card;
  }

  // ---------- charts: hand-drawn SVG from the server's history and the live views ----------
  // The cluster's leader samples every pool once a minute and the server keeps a week of it
  // (GET /api/history, with the hospital file's waiting targets). On showing the charts the
  // page loads the window chosen; from then on it appends what the live views say (at every
  // pool event, and every 30 s in between), so the last minutes are as fresh as the stream.
  // Before `liveSince` a series is the server's samples; from it on, the page's own.
  const LIVE_KEEP_MS = 24 * 3600 * 1000;
  const SAMPLE_MS = 30000;
  // Breaks a line where the server has no sample for longer (no leader, or no server).
  const GAP_MS = 5 * 60 * 1000;
  const WINDOWS_H = [1, 8, 24];
  const liveSince = Date.now();
  const samples = { util: {}, wait: {} };
  // The server's history: the last window loaded, by series, and the targets in seconds.
  const hist = { hours: null, from: null, util: {}, wait: {}, targets: null, error: null, truncated: false };
  function pushSample(series, key, tms, v) {
    const arr = series[key] || (series[key] = []);
    const lastPt = arr[arr.length - 1];
    // Samples closer than 2 s apart replace each other (a burst of events is one point).
    if (lastPt && tms - lastPt[0] < 2000) { lastPt[1] = v; lastPt[0] = tms; } else arr.push([tms, v]);
    while (arr.length && arr[0][0] < tms - LIVE_KEEP_MS) arr.shift();
  }
  function sample() {
    const now = Date.now();
    const longest = {};
    for (const [k, d] of live.pools) {
      const u = utilisation(d.units || []);
      pushSample(samples.util, k, now, u.inService ? u.pct : null);
      const since = (now - (d.received_ms || now)) / 1000;
      for (const r of d.queue || []) {
        longest[r.priority] = Math.max(longest[r.priority] || 0, (r.waited_s || 0) + since);
      }
    }
    for (const p of PRIORITIES) pushSample(samples.wait, p, now, Math.round(longest[p] || 0));
    for (const f of chartSubs) f();
  }
  const chartSubs = [];
  setInterval(() => { if (me && me.role !== "patient" && live.pools.size) sample(); }, SAMPLE_MS);

  // The server's samples as chart series: utilisation per pool (%, null with nothing in
  // service), and per priority the longest wait over every pool (s). A gap breaks the line.
  function historySeries(list) {
    const util = {}, wait = {};
    const add = (series, key, tm, v) => {
      const arr = series[key] || (series[key] = []);
      const prev = arr[arr.length - 1];
      if (prev && tm - prev[0] > GAP_MS) arr.push([prev[0] + 60000, null]);
      if (prev && prev[0] === tm) prev[1] = v === null || prev[1] === null ? v : Math.max(prev[1], v); else arr.push([tm, v]);
    };
    for (const x of list) {
      const inService = x.units - x.unavailable;
      add(util, (x.pool || "equipment") + ":" + x.name, x.at_ms, inService > 0 ? Math.round((100 * x.in_use) / inService) : null);
      for (const p of PRIORITIES) add(wait, p, x.at_ms, Math.round(((x.waiting && x.waiting[p] && x.waiting[p].oldest_wait_ms) || 0) / 1000));
    }
    return { util, wait };
  }
  async function loadHistory(hours) {
    const until = Date.now();
    const from = until - hours * 3600 * 1000;
    const r = await api("/api/history?since=" + from + "&until=" + (until + 1));
    const s = historySeries(r.samples || []);
    const tg = r.targets_ms || {};
    Object.assign(hist, { hours, from, util: s.util, wait: s.wait, error: null, truncated: !!r.truncated,
      targets: Object.fromEntries(PRIORITIES.map((p) => [p, Math.round((tg[p] || 0) / 1000)])) });
  }
  // History before the page's own samples, then those.
  function series(kind, key, from) {
    const old = (hist[kind][key] || []).filter((p) => p[0] >= from && p[0] < liveSince);
    const mine = (samples[kind][key] || []).filter((p) => p[0] >= from);
    return { pts: old.concat(mine), before: old.length };
  }

  function chartsView(panel) {
    let hours = 1;
    const winSel = h("select", { id: "chart-window", name: "window" },
      WINDOWS_H.map((n) => h("option", { value: n, selected: n === hours }, t("ch.h", n))));
    const state = h("p", { class: "chart-limit", role: "status", "aria-live": "polite" });
    const utilGrid = h("div", { class: "charts" });
    const waitGrid = h("div", { class: "charts" });
    const targetsNote = h("p", { class: "muted" });
    panel.append(h("h1", { class: "sr-only" }, t("view.charts")),
      h("div", { class: "chart-controls" }, h("label", { for: "chart-window" }, t("ch.window")), winSel),
      state,
      h("h2", { class: "section-h" }, t("ch.util")), utilGrid,
      h("h2", { class: "section-h" }, t("ch.wait")), targetsNote, waitGrid);
    let visible = false, loading = false;
    const load = () => {
      if (loading) return;
      loading = true;
      state.dataset.state = "loading";
      state.textContent = t("ch.loading");
      loadHistory(hours).then(() => {
        state.dataset.state = "loaded";
      }, (e) => {
        hist.error = e;
        state.dataset.state = "error";
      }).finally(() => { loading = false; draw(); });
    };
    winSel.addEventListener("change", () => { hours = Number(winSel.value); load(); });
    const draw = () => {
      if (!visible) return;
      const to = Date.now(), from = to - hours * 3600 * 1000;
      if (state.dataset.state === "error") state.textContent = errText(t("do.history"), hist.error) + " " + t("ch.liveOnly");
      else if (state.dataset.state === "loaded") state.textContent = t("ch.limit") + (hist.truncated ? " " + t("ch.truncated") : "");
      const targets = hist.targets;
      targetsNote.textContent = targets ? t("ch.targets") : t("ch.targetsWait");
      put(utilGrid, ...[...live.pools.values()].map((d) => {
        const { pts, before } = series("util", poolKey(d), from);
        const vals = pts.filter((p) => p[1] !== null).map((p) => p[1]);
        const nowV = vals.length ? vals[vals.length - 1] + "%" : "—";
        return chartCard(d.name, { key: poolKey(d), kind: "util", before }, lineChart(pts, from, to, 100, null, (v) => v + "%",
          t("ch.utilAlt", d.name, nowV, vals.length ? Math.max(...vals) + "%" : "—")), t("ch.now", nowV), pts.length);
      }));
      put(waitGrid, ...PRIORITIES.map((p) => {
        const { pts, before } = series("wait", p, from);
        const target = targets ? targets[p] : null;
        const vals = pts.filter((x) => x[1] !== null).map((x) => x[1]);
        const mx = Math.max((target || 600) * 1.25, ...vals);
        const nowV = vals.length ? duration(vals[vals.length - 1]) : "—";
        const tText = target ? duration(target) : "—";
        return chartCard(prioText(p), { key: p, kind: "wait", before, target: target || "" }, lineChart(pts, from, to, mx, target, (v) => duration(v),
          t("ch.waitAlt", prioText(p), nowV, tText)), t("ch.now", nowV) + " · " + t("ch.target", tText), pts.length);
      }));
    };
    chartSubs.push(draw);
    live.poolSubs.push(() => sample());
    return {
      shown: () => {
        visible = true;
        sample();
        // Loaded once per window chosen; then the live points carry it on.
        if (hist.error || hist.hours !== hours) load(); else { state.dataset.state = "loaded"; draw(); }
      },
      hidden: () => { visible = false; },
    };
  }

  function chartCard(title, data, svgEl, caption, n) {
    return h("figure", { class: "chart", data: { chart: data.key, kind: data.kind, samples: n, history: data.before, target: data.target } },
      h("figcaption", {}, h("strong", {}, title), " ", h("span", { class: "muted" }, caption + " · " + t("ch.samples", n))),
      svgEl);
  }

  // A step chart of [t, v] points from `from` to `to` (the value holds until the next sample),
  // y from 0 to `yMax`, with a dashed `target` line; `label` is its text for screen readers.
  function lineChart(pts, from, to, yMax, target, fy, label) {
    const W = 320, H = 130, L = 58, R = 8, T = 8, B = 22;
    const x = (tm) => L + ((tm - from) / (to - from)) * (W - L - R);
    const y = (v) => T + (1 - Math.min(v, yMax) / yMax) * (H - T - B);
    const g = [];
    // axes and grid: 0, half, top
    for (const f of [0, 0.5, 1]) {
      const v = yMax * f;
      g.push(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
      g.push(s("text", { x: L - 4, y: y(v) + 4, class: "tick", "text-anchor": "end" }, fy(Math.round(v))));
    }
    const span = to - from;
    for (let i = 0; i <= 3; i++) {
      const tm = from + (span * i) / 3;
      g.push(s("text", { x: x(tm), y: H - 6, class: "tick", "text-anchor": i === 0 ? "start" : i === 3 ? "end" : "middle" }, clock(tm)));
    }
    if (target) {
      g.push(s("line", { x1: L, x2: W - R, y1: y(target), y2: y(target), class: "target" }));
    }
    // Steps; a null value (nothing in service) breaks the line.
    let d = "", pen = false;
    pts.forEach((p, i) => {
      if (p[1] === null) { pen = false; return; }
      const next = i + 1 < pts.length ? pts[i + 1][0] : to;
      d += (pen ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1) + "L" + x(Math.min(next, to)).toFixed(1) + " " + y(p[1]).toFixed(1);
      pen = true;
    });
    if (d) g.push(s("path", { d, class: "series" }));
    const lastPt = pts.length ? pts[pts.length - 1] : null;
    if (lastPt && lastPt[1] !== null) g.push(s("circle", { cx: x(lastPt[0]), cy: y(lastPt[1]), r: 3, class: "last" }));
    if (!pts.length) g.push(s("text", { x: (L + W) / 2, y: H / 2, class: "tick", "text-anchor": "middle" }, t("ch.nodata")));
    return s("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": label, class: "chart-svg", preserveAspectRatio: "none" },
      s("title", {}, label), g);
  }

  // ---------- admin: tokens, audit, cluster ----------
  function adminView(panel) {
    // tokens
    const tokErr = errorBox();
    const role = h("select", { name: "role" }, [...STAFF, "patient"].map((r) => h("option", { value: r }, roleText(r))));
    const tpat = h("input", { name: "patient", spellcheck: "false", autocomplete: "off" });
    const label = h("input", { name: "label", autocomplete: "off", maxlength: 200 });
    const create = h("button", { type: "submit", data: { action: "create-token" } }, t("tok.create"));
    const shown = h("div", { class: "token-once", hidden: true, "aria-live": "polite" });
    const createForm = h("form", { class: "card-form", "aria-labelledby": "tok-new-h" },
      h("h3", { id: "tok-new-h" }, t("tok.new")), field(t("tok.role"), role), field(t("tok.patient"), tpat),
      field(t("tok.label"), label), create, tokErr);
    const listErr = errorBox();
    const refreshBtn = h("button", { type: "button", class: "btn-secondary", data: { action: "refresh-tokens" } }, t("tok.refresh"));
    const tokTable = h("div", { class: "table-wrap" });
    const loadTokens = () => act(refreshBtn, listErr, t("do.tokens"), null, () => api("/api/tokens"), drawTokens);
    function drawTokens(list) {
      if (!list.length) { put(tokTable, h("p", { class: "empty" }, t("tok.none"))); return; }
      const rows = list.slice().sort((a, b) => b.created_ms - a.created_ms).map((tk) => {
        const err = errorBox();
        let cell;
        if (tk.revoked_ms) cell = h("span", { class: "muted" }, t("tok.revoked") + " " + dateTime(tk.revoked_ms));
        else if (tk.expired) cell = h("span", { class: "badge tok-expired" }, t("tok.expired"));
        else {
          const b = h("button", { type: "button", class: "btn-danger", data: { action: "revoke" } }, t("tok.revoke"));
          b.addEventListener("click", () => act(b, err, t("do.revoke"), t("tok.revokeBusy"),
            () => api("/api/tokens/" + encodeURIComponent(tk.id), { method: "DELETE" }), () => loadTokens()));
          cell = h("span", {}, h("span", { class: "badge tok-active" }, t("tok.active")), " ", b, err);
        }
        return h("tr", { data: { token: tk.id, revoked: tk.revoked_ms ? "1" : "", expired: tk.expired ? "1" : "" } },
          h("td", {}, h("code", { class: "id" }, tk.id)), h("td", {}, roleText(tk.role)),
          h("td", {}, tk.patient ? idCode(tk.patient) : "—"), h("td", {}, tk.label || ""),
          h("td", { class: "num" }, dateTime(tk.created_ms)),
          h("td", { class: "num tok-expires" }, tk.expires_ms ? dateTime(tk.expires_ms) : t("tok.never")), h("td", {}, cell));
      });
      put(tokTable, h("table", { class: "queue" }, h("caption", { class: "sr-only" }, t("tok.title")),
        h("thead", {}, h("tr", {}, ["tok.id", "tok.role", "q.patient", "tok.label", "tok.created", "tok.expires", "u.status"]
          .map((k) => h("th", { scope: "col" }, t(k))))), h("tbody", {}, rows)));
    }
    createForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const body = { role: role.value, label: label.value };
      if (tpat.value.trim()) body.patient = tpat.value.trim();
      act(create, tokErr, t("do.token"), t("tok.createBusy"), () => api("/api/tokens", { method: "POST", body }), (tk) => {
        const code = h("code", { class: "token-text", data: { tokenId: tk.id } }, tk.token);
        const copy = h("button", { type: "button", class: "btn-secondary" }, t("tok.copy"));
        copy.addEventListener("click", async () => {
          try { await navigator.clipboard.writeText(tk.token); copy.textContent = t("tok.copied"); } catch (_) {
            const r = document.createRange(); r.selectNodeContents(code);
            const sl = getSelection(); sl.removeAllRanges(); sl.addRange(r);
          }
        });
        put(shown, h("p", {}, h("strong", {}, t("tok.once"))), h("p", {}, code, " ", copy),
          tk.role === "patient" && tk.patient
            ? h("p", {}, h("a", { href: "/patient#token=" + encodeURIComponent(tk.token), rel: "noreferrer", target: "_blank" }, t("tok.openPatient")))
            : null);
        shown.hidden = false;
        label.value = "";
        loadTokens();
      });
    });

    // audit
    const auErr = errorBox();
    const aPat = h("input", { name: "patient", spellcheck: "false", autocomplete: "off" });
    const aActor = h("input", { name: "actor", spellcheck: "false", autocomplete: "off" });
    const aSince = h("input", { name: "since", type: "datetime-local" });
    const aLimit = h("input", { name: "limit", type: "number", min: 1, max: 1000, value: 50 });
    const search = h("button", { type: "submit", data: { action: "audit" } }, t("au.search"));
    const more = h("button", { type: "button", class: "btn-secondary", hidden: true }, t("au.more"));
    const auTable = h("tbody", {});
    const auWrap = h("div", { class: "table-wrap", hidden: true }, h("table", { class: "queue audit" },
      h("caption", { class: "sr-only" }, t("au.title")),
      h("thead", {}, h("tr", {}, ["au.seq", "au.at", "au.who", "au.action", "au.patient", "au.order", "au.outcome", "au.detail"]
        .map((k) => h("th", { scope: "col" }, t(k))))), auTable));
    const auEmpty = h("p", { class: "empty", hidden: true }, t("au.none"));
    const auForm = h("form", { class: "card-form audit-form", "aria-labelledby": "au-h" },
      field(t("au.patient"), aPat), field(t("au.actor"), aActor), field(t("au.since") + " (" + TZ + ")", aSince), field(t("au.limit"), aLimit), search, auErr);
    let lastSeq = null;
    const query = (after) => {
      const q = new URLSearchParams();
      if (aPat.value.trim()) q.set("patient", aPat.value.trim());
      if (aActor.value.trim()) q.set("actor", aActor.value.trim());
      if (aSince.value) q.set("since_ms", String(zonedMs(aSince.value)));
      q.set("limit", String(Number(aLimit.value) || 50));
      if (after !== null) q.set("after_seq", String(after));
      return "/api/audit?" + q.toString();
    };
    const drawAudit = (rows, append) => {
      if (!append) put(auTable, );
      auTable.append(...rows.map((r) => h("tr", { data: { seq: r.seq, action: r.action } },
        h("td", { class: "num" }, r.seq), h("td", { class: "num" }, dateTime(r.at_ms)),
        h("td", {}, r.role ? roleText(r.role) + " " : "", idCode(r.actor)), h("td", {}, h("code", {}, r.action)),
        h("td", {}, r.patient ? idCode(r.patient) : "—"), h("td", {}, r.order ? idCode(r.order) : "—"),
        h("td", { class: "outcome-" + (r.outcome === "ok" ? "ok" : "other") }, r.outcome), h("td", {}, r.detail || ""))));
      if (rows.length) lastSeq = rows[rows.length - 1].seq;
      const limit = Number(aLimit.value) || 50;
      more.hidden = rows.length < limit;
      auWrap.hidden = !auTable.children.length;
      auEmpty.hidden = !!auTable.children.length;
    };
    auForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      act(search, auErr, t("do.audit"), t("au.searchBusy"), () => api(query(null)), (r) => drawAudit(r || [], false));
    });
    more.addEventListener("click", () => act(more, auErr, t("do.audit"), null, () => api(query(lastSeq)), (r) => drawAudit(r || [], true)));

    // cluster
    const clBody = h("tbody", {});
    const clHosp = h("p", { class: "muted" });
    const drawCluster = (c) => {
      clHosp.textContent = t("cl.hospital") + ": " + (c.hospital || "?") + " · " + t("cl.instance") + ": " + (c.instance || "?") +
        " · " + t("cl.leader") + ": " + (c.leader || t("cl.none"));
      put(clBody, ...(c.members || []).map((m) => h("tr", { class: m.id === c.leader ? "leader-row" : "", data: { member: m.id } },
        h("td", {}, m.id), h("td", {}, m.id === c.leader ? h("strong", {}, "★ " + t("cl.isLeader")) : t("cl.follower")),
        h("td", {}, m.url || ""), h("td", { class: "num" }, m.started_ms ? dateTime(m.started_ms) : ""))));
    };
    live.clusterSubs.push(drawCluster);
    if (live.cluster) drawCluster(live.cluster);
    else api("/api/cluster").then(drawCluster, () => {});

    const unitsLink = h("button", { type: "button", class: "btn-link" }, t("ad.units"));
    unitsLink.addEventListener("click", () => window.__showTab && window.__showTab("units"));

    panel.append(h("h1", { class: "sr-only" }, t("view.admin")),
      h("div", { class: "admin-grid" },
        h("section", { class: "pool", "aria-labelledby": "tok-h" },
          h("div", { class: "pool-head" }, h("h2", { id: "tok-h" }, t("tok.title")), refreshBtn),
          createForm, shown, listErr, tokTable),
        h("section", { class: "pool", "aria-labelledby": "cl-h" },
          h("h2", { id: "cl-h" }, t("cl.title")), clHosp,
          h("div", { class: "table-wrap" }, h("table", { class: "queue" }, h("caption", { class: "sr-only" }, t("cl.title")),
            h("thead", {}, h("tr", {}, ["cl.member", "cl.role", "cl.url", "cl.started"].map((k) => h("th", { scope: "col" }, t(k))))), clBody)),
          h("p", {}, unitsLink))),
      h("section", { class: "pool audit-box", "aria-labelledby": "au-h" },
        h("h2", { id: "au-h" }, t("au.title")), auForm, auWrap, auEmpty, more));
    loadTokens();
    return {};
  }

  // ---------- alarms ----------
  // IEC 60601-1-8: high red, medium yellow, low cyan. The priority is always also written out
  // and marked by its number of exclamation marks, never shown by colour alone.
  const ALARM_PRIORITIES = [
    { key: "high", mark: "!!!", title: "al.high" },
    { key: "medium", mark: "!!", title: "al.medium" },
    { key: "low", mark: "!", title: "al.low" },
  ];
  const ALARM_STATES = { raised: 0, acknowledged: 1, shelved: 2 };
  const SHELVE_FOR = ["15m", "30m", "1h", "2h", "4h", "8h"];

  // "equipment.MRI" -> "equipment MRI"; "cluster" -> "the whole cluster".
  function scopeText(scope) {
    scope = String(scope || "");
    if (scope === "cluster") return t("al.cluster");
    const i = scope.indexOf(".");
    if (i < 0) return scope;
    const kind = scope.slice(0, i);
    const what = scope.slice(i + 1);
    // A NEWS2 alarm is a patient's: named as the ward view names them (staff see names there).
    const name = kind === "patient" ? wardNames.get(what) : null;
    return (STRINGS[lang]["kind." + kind] ? t("kind." + kind) : kind) + " " + (name ? name + " (" + what + ")" : what);
  }

  // A patient's alarm: a button that opens their vital signs in the ward view.
  function scopeVitals(scope) {
    const m = /^patient\.(.+)$/.exec(String(scope || ""));
    if (!m || !openVitals) return null;
    const b = h("button", { type: "button", class: "btn-link alarm-vitals", data: { action: "alarm-vitals" } }, t("al.vitals"));
    b.addEventListener("click", () => openVitals && openVitals(m[1]));
    return [" · ", b];
  }

  // "nurse:t-fd29de3acc1e" -> "nurse" and the token's id.
  function actorEl(by) {
    by = String(by || "?");
    const i = by.indexOf(":");
    if (i < 0) return h("strong", {}, by);
    const r = by.slice(0, i);
    return h("span", { class: "actor" }, h("strong", {}, STRINGS.en["role." + r] ? roleText(r) : r), " ", idCode(by.slice(i + 1)));
  }

  function alarmPrio(a) {
    return ALARM_PRIORITIES.find((p) => p.key === a.priority) || ALARM_PRIORITIES[ALARM_PRIORITIES.length - 1];
  }

  // The header's badge: how many active alarms nobody has acknowledged (nor shelved).
  function alarmBadge(alarms) {
    const open = alarms.filter((a) => a.state === "raised");
    const badge = $("alarm-badge");
    const top = ALARM_PRIORITIES.find((p) => open.some((a) => alarmPrio(a) === p));
    badge.className = "alarm-badge " + (top ? "ap-" + top.key : "ab-none");
    badge.querySelector(".ab-mark").textContent = top ? top.mark : "";
    badge.dataset.count = String(open.length);
    $("alarm-badge-text").textContent = open.length ? t("al.badge", open.length) : t("al.badgeNone");
    badge.title = t("al.badgeTitle", alarms.length);
    badge.hidden = false;
    unackedAlarms = open.length;
    document.title = docTitle();
  }

  function alarmPanel() {
    const mayShelve = may("shelve");
    const lv = liveBadge(t("al.stream"));
    const summary = h("p", { class: "summary" }, t("al.loading"));
    const groups = {};
    const groupBox = h("div", { class: "alarm-groups" });
    for (const p of ALARM_PRIORITIES) {
      const hid = "alarms-" + p.key;
      const count = h("span", { class: "alarm-group-count" });
      const list = h("ul", { class: "alarm-list", "aria-labelledby": hid });
      const sec = h("section", { class: "alarm-group ap-" + p.key, data: { priority: p.key }, hidden: true },
        h("h3", { id: hid }, h("span", { class: "badge ap-badge" }, p.mark), " ", t(p.title), " ", count), list);
      groups[p.key] = { sec, list, count };
      groupBox.append(sec);
    }
    const el = h("section", { id: "alarms", class: "alarms", "aria-labelledby": "alarms-h", tabindex: "-1" },
      h("div", { class: "pool-head" }, h("h2", { id: "alarms-h" }, t("al.title")), lv),
      summary,
      h("p", { class: "phi-note" }, h("strong", {}, t("al.phi1")), t("al.phi2")),
      groupBox);

    const cards = new Map(); // alarm id -> its card, kept across updates (a half-typed note survives)
    let current = [];

    const draw = (alarms) => {
      current = alarms;
      const seen = new Set();
      for (const p of ALARM_PRIORITIES) {
        const g = groups[p.key];
        const mine = alarms.filter((a) => alarmPrio(a) === p).sort((a, b) =>
          (ALARM_STATES[a.state] || 0) - (ALARM_STATES[b.state] || 0)
          || a.raised_ms - b.raised_ms || (a.id < b.id ? -1 : 1));
        mine.forEach((a, i) => {
          let card = cards.get(a.id);
          if (!card) { card = alarmCard(a, mayShelve, applyOne); cards.set(a.id, card); }
          card.update(a);
          seen.add(a.id);
          if (g.list.children[i] !== card.el) g.list.insertBefore(card.el, g.list.children[i] || null);
        });
        g.sec.hidden = !mine.length;
        g.count.textContent = "(" + mine.length + ")";
      }
      for (const [id, card] of cards) {
        if (!seen.has(id)) { card.el.remove(); cards.delete(id); }
      }
      const n = (st) => alarms.filter((a) => a.state === st).length;
      summary.textContent = alarms.length
        ? t("al.summary", alarms.length, n("raised"), n("acknowledged"), n("shelved"))
        : t("al.none");
      el.dataset.count = String(alarms.length);
      alarmBadge(alarms);
    };

    // The answer to our own acknowledgement or shelving: shown at once, without waiting for
    // the stream (which brings the same change, or a later one).
    function applyOne(a) {
      if (!current.some((x) => x.id === a.id)) return;
      draw(current.map((x) => (x.id === a.id ? a : x)));
    }

    // The stream's list; a card keeps an alarm's newer version (higher next_seq) than a
    // stream event computed before our own change.
    const render = (list) => {
      const alarms = (Array.isArray(list) ? list : []).filter((a) => a && a.id && a.state !== "cleared")
        .map((a) => {
          const card = cards.get(a.id);
          return card && card.alarm && card.alarm.next_seq > a.next_seq ? card.alarm : a;
        });
      draw(alarms);
    };
    if (live.alarms.length) render(live.alarms);
    return { el, live: lv, render };
  }

  function alarmCard(a, mayShelve, applyOne) {
    const key = newId("alarm");
    const id = a.id;
    const path = "/api/alarms/" + encodeURIComponent(id);
    const prio = h("span", { class: "badge ap-badge" });
    const text = h("p", { id: key + "-summary", class: "alarm-summary" });
    const state = h("span", { class: "badge alarm-state", tabindex: "-1" });
    const meta = h("dl", { class: "alarm-meta" });
    const error = h("p", { class: "alarm-error", role: "alert", hidden: true });

    const note = h("input", { id: key + "-note", name: "note", type: "text", maxlength: 500, autocomplete: "off",
      spellcheck: "false", placeholder: t("al.notePh") });
    const ackBtn = h("button", { type: "submit", class: "btn-ack", data: { action: "ack" }, "aria-describedby": key + "-summary" },
      t("al.ack"));
    const ackForm = h("form", { class: "alarm-form ack-form" },
      h("label", { for: key + "-note" }, t("al.note")), note, ackBtn);
    ackForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const body = note.value.trim() ? { note: note.value.trim() } : {};
      doAct(t("al.doAck"), ackBtn, t("al.ackBusy"), "/ack", body, () => { note.value = ""; });
    });

    let shelveBtn = null, shelveForm = null;
    if (mayShelve) {
      const dur = h("select", { id: key + "-for", name: "for" },
        SHELVE_FOR.map((v) => h("option", { value: v, selected: v === "30m" }, t("al." + v))));
      const reason = h("input", { id: key + "-reason", name: "reason", type: "text", required: true, maxlength: 500,
        autocomplete: "off", placeholder: t("al.reasonPh") });
      const submit = h("button", { type: "submit", data: { action: "shelve-submit" } }, t("al.shelve"));
      const cancel = h("button", { type: "button", class: "btn-secondary" }, t("al.cancel"));
      shelveForm = h("form", { id: key + "-shelve", class: "alarm-form shelve-form", hidden: true },
        h("label", { for: key + "-for" }, t("al.shelveFor")), dur,
        h("label", { for: key + "-reason" }, t("al.reason")), reason, submit, cancel);
      shelveBtn = h("button", { type: "button", class: "btn-secondary", data: { action: "shelve" },
        "aria-expanded": "false", "aria-controls": key + "-shelve", "aria-describedby": key + "-summary" }, t("al.shelveOpen"));
      const toggle = (open) => {
        shelveForm.hidden = !open;
        shelveBtn.setAttribute("aria-expanded", String(open));
        if (open) dur.focus(); else shelveBtn.focus();
      };
      shelveBtn.addEventListener("click", () => toggle(shelveForm.hidden));
      cancel.addEventListener("click", () => toggle(false));
      shelveForm.addEventListener("submit", (ev) => {
        ev.preventDefault();
        doAct(t("al.doShelve"), submit, t("al.shelveBusy"), "/shelve", { for: dur.value, reason: reason.value.trim() },
          () => { reason.value = ""; shelveForm.hidden = true; shelveBtn.setAttribute("aria-expanded", "false"); });
      });
    }
    const actions = h("div", { class: "alarm-actions" }, ackForm, shelveBtn, shelveForm);

    const el = h("li", { class: "alarm", data: { alarm: id } },
      h("div", { class: "alarm-top" }, prio, state), text, meta, actions, error);
    const card = { el, alarm: null };

    function doAct(what, btn, busyText, suffix, body, onDone) {
      return act(btn, error, what, busyText, () => api(path + suffix, { method: "POST", body }), (r) => {
        onDone();
        if (r && r.id) applyOne(r);
        // The form just used may be gone now: keep the keyboard's place on this card.
        if (el.isConnected && !btn.offsetParent) state.focus();
      });
    }

    const dt = (k) => h("dt", {}, t(k));
    card.update = (a) => {
      card.alarm = a;
      const p = alarmPrio(a);
      el.className = "alarm ap-" + p.key + " as-" + a.state;
      el.dataset.priority = a.priority;
      el.dataset.state = a.state;
      put(prio, h("span", { "aria-hidden": "true" }, p.mark + " "), t("al.prio", a.priority));
      put(state, ALARM_STATES[a.state] !== undefined ? t("al." + a.state) : a.state);
      text.textContent = a.summary || a.condition || a.rule;
      const ack = a.acknowledged, shelf = a.shelved;
      put(meta, 
        dt("al.where"), h("dd", {}, scopeText(a.scope), scopeVitals(a.scope)),
        dt("al.since"), h("dd", {}, agoEl(a.raised_ms), " (" + clock(a.raised_ms) + ")"),
        dt("al.ackd"), h("dd", { class: "alarm-ack" }, ack
          ? [actorEl(ack.by), " ", agoEl(ack.at_ms), ack.note ? h("q", { class: "alarm-note" }, ack.note) : null]
          : h("span", { class: "muted" }, a.latching ? t("al.notYetLatch") : t("al.notYet"))),
        ...(shelf ? [dt("al.shelvedBy"), h("dd", { class: "alarm-shelf" }, t("al.until", clock(shelf.until_ms)),
          actorEl(shelf.by), shelf.reason ? h("q", { class: "alarm-note" }, shelf.reason) : null)] : []),
        dt("al.escalated"), h("dd", { class: "alarm-esc" }, a.escalations ? t("al.esc", a.escalations) : t("al.esc0")),
        dt("al.rule"), h("dd", {}, a.rule, " · ", h("code", {}, a.condition || "")));
      ackForm.hidden = !!ack;
      if (shelveBtn) {
        const shelvable = a.state !== "shelved";
        shelveBtn.hidden = !shelvable;
        if (!shelvable) { shelveForm.hidden = true; shelveBtn.setAttribute("aria-expanded", "false"); }
      }
    };
    return card;
  }

  // ---------- patient view ----------
  function patientView(id) {
    $("view-name").textContent = t("view.patient");
    document.title = "medkeeper — " + t("view.patient");
    const view = $("view");
    if (!id) {
      const input = h("input", { id: "pid", name: "id", required: true, spellcheck: "false" });
      put(view, h("section", { class: "signin" },
        h("h1", {}, t("pp.open")),
        h("form", { method: "get", action: "/patient" },
          h("label", { for: "pid" }, t("pp.id")), input, h("button", { type: "submit" }, t("pp.openBtn")))));
      return;
    }
    const lv = liveBadge(t("live.patient"));
    allBadges.push(lv);
    const title = h("h1", {}, t("pp.title"));
    const list = h("div", { class: "exams", "aria-live": "polite" }, h("p", { class: "muted" }, t("loading")));
    put(view, h("section", { class: "patient", data: { patient: id } },
      h("div", { class: "pool-head" }, title, lv),
      h("p", { class: "hint muted" }, t("pp.hint")), list));
    const path = "/api/patients/" + encodeURIComponent(id);
    api(path).then((d) => {
      if (d && d.patient && d.patient.name) title.textContent = t("pp.titleFor", d.patient.name);
      renderExams(list, d.queue || []);
    }, (e) => showError(t("pp.patient"), e));
    stream(path + "/events", { patient: (d) => renderExams(list, d.queue || []) }, () => allBadges);
  }

  function examText(e) {
    const pool = (e.pool && e.pool.name) || t("pp.exam");
    switch (e.state) {
      case "queued": {
        const eta = e.estimated_wait_s > 0 ? (lang === "en" ? ", " : "，") + minutes(e.estimated_wait_s) : "";
        return e.position === 1 ? t("pp.next", pool, eta) : t("pp.number", e.position || "?", pool, eta);
      }
      case "called": return t("pp.go", e.called_to || pool);
      case "in-progress": return t("pp.under", pool, e.called_to);
      case "completed": return e.results_ready ? t("pp.ready") : t("pp.doneNotReady", pool);
      case "reported": return t("pp.ready");
      case "cancelled": return t("pp.cancelled", pool);
      case "no-show": return t("pp.noshow", pool);
      default: return pool + ": " + stateText(e.state);
    }
  }

  function renderExams(list, queue) {
    if (!queue.length) { put(list, h("p", { class: "empty big" }, t("pp.none"))); return; }
    put(list, h("ul", { class: "exam-list" }, queue.map((e) => {
      const ready = e.results_ready || e.state === "reported";
      return h("li", { class: "exam ex-" + e.state + (ready ? " ready" : ""), data: { order: e.order, state: e.state, ready: ready ? "1" : "" } },
        h("p", { class: "exam-text" }, ready ? h("span", { "aria-hidden": "true" }, "✓ ") : null, examText(e)),
        h("p", { class: "exam-meta muted" }, (e.pool && e.pool.name) || "", " · ", prioBadge(e.priority),
          " · ", stateText(e.state), " · " + t("pp.orderLabel") + " ", idCode(e.order)));
    })));
  }

  // ---------- wiring ----------
  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const tk = $("token-input").value.trim();
      if (!/^mkt_[0-9a-f]+$/i.test(tk)) { setStatus(t("signin.bad"), "error"); return; }
      sessionStorage.setItem(TOKEN_KEY, tk);
      $("token-input").value = "";
      start();
    });
    $("signout").addEventListener("click", () => signOut());
    $("lang").addEventListener("change", (ev) => setLang(ev.target.value));
    $("tabs").addEventListener("click", onTabClick);
    $("tabs").addEventListener("keydown", onTabKey);
    start();
  });
  // A browser keeps at most 6 HTTP/1.1 connections per server, and every open stream holds one:
  // close them before leaving, or the next page's request waits behind them.
  window.addEventListener("beforeunload", closeStreams);
  window.addEventListener("pagehide", closeStreams);
  window.addEventListener("pageshow", (ev) => { if (ev.persisted) location.reload(); });
})();
