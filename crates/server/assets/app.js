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
  const HISTORY_KEY = "medkeeper.history";
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
      "tz": (z) => "Times in " + z,
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
      "do.audit": "Searching the audit log", "do.tokens": "Listing tokens",
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
      "ch.limit": "Drawn from the live views this browser tab has received since it opened the dashboard (the server keeps no history): a gap means the tab was closed.",
      "ch.targets": "Targets are the defaults (stat 10 min, asap 30 min, urgent 60 min, routine 24 h); a hospital file may set others.",
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
      "tz": (z) => "时间按 " + z + " 时区显示",
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
      "do.audit": "查询审计日志", "do.tokens": "列出令牌",
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
      "ch.limit": "数据来自本浏览器标签页自打开仪表板以来收到的实时视图（服务器不保存历史）：空白表示该标签页曾关闭。",
      "ch.targets": "目标为默认值（特急 10 分钟、尽快 30 分钟、紧急 60 分钟、常规 24 小时）；医院配置文件可能另有设置。",
      "ch.nodata": "尚无数据。", "ch.target": (d) => "目标 " + d,
      "ch.now": (v) => "当前 " + v, "ch.samples": (n) => n + " 个样本",
      "ch.utilAlt": (p, v, mx) => p + " 使用率：当前 " + v + "，最高 " + mx,
      "ch.waitAlt": (p, v, t) => p + " 最长等候：当前 " + v + "，目标 " + t,
      "tok.title": "令牌", "tok.new": "创建令牌", "tok.role": "角色", "tok.patient": "患者编号（患者令牌）",
      "tok.label": "标签", "tok.create": "创建", "tok.createBusy": "创建中…",
      "tok.once": "新令牌仅显示这一次，请立即复制。服务器只保存其哈希值。",
      "tok.copy": "复制", "tok.copied": "已复制", "tok.openPatient": "用它打开患者页面",
      "tok.id": "编号", "tok.created": "创建时间", "tok.revoked": "吊销时间", "tok.active": "有效",
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

  // The hospital's time zone: the browser's (the API names none).
  const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const fmtCache = {};
  function fmt(kind) {
    const k = lang + kind;
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
  }

  function signOut(message) {
    closeStreams();
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    me = null;
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
    $("tz").textContent = t("tz", TZ);
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
    panel.append(h("h1", { class: "sr-only" }, t("view.ward")), alarms.el, grid);
    const sections = {};
    for (const p of poolList) {
      const sec = poolSection(live.pools.get(poolKey(p)));
      sections[poolKey(p)] = sec;
      allBadges.push(sec.live);
      grid.append(sec.el);
    }
    live.poolSubs.push((d) => { const sec = sections[poolKey(d)]; if (sec) sec.render(d); });
    return {};
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
    const refresh = (u) => {
      readOrder(u.order).then((d) => {
        const o = d.order;
        const prev = el.dataset.orderState;
        if (el.isConnected && o.state !== prev && occ.querySelector("[data-actions-for]")?.contains(document.activeElement) !== true) drawOcc(u, o);
        else if (o.state !== prev) drawOcc(u, o);
      }, () => {});
    };
    return card;
  }

  // ---------- charts: hand-drawn SVG from samples of the live views ----------
  // The server keeps no history of utilisation or waits, so the page samples the pool views it
  // receives (at every event, and every 30 s in between) and keeps 8 hours in sessionStorage:
  // the charts cover the time this browser tab has had the dashboard open.
  const HISTORY_MS = 8 * 3600 * 1000;
  const SAMPLE_MS = 30000;
  const TARGETS_S = { stat: 600, asap: 1800, urgent: 3600, routine: 86400 };
  const samples = loadHistory();
  function loadHistory() {
    try {
      const v = JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "null");
      if (v && v.util && v.wait) return v;
    } catch (_) { /* a fresh history */ }
    return { util: {}, wait: {} };
  }
  function pushSample(series, key, tms, v) {
    const arr = series[key] || (series[key] = []);
    const lastPt = arr[arr.length - 1];
    // Samples closer than 2 s apart replace each other (a burst of events is one point).
    if (lastPt && tms - lastPt[0] < 2000) { lastPt[1] = v; lastPt[0] = tms; } else arr.push([tms, v]);
    while (arr.length && arr[0][0] < tms - HISTORY_MS) arr.shift();
  }
  let saveTimer = null;
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
    clearTimeout(saveTimer);
    saveTimer = setTimeout(saveSamples, 1000);
    for (const f of chartSubs) f();
  }
  function saveSamples() {
    try { sessionStorage.setItem(HISTORY_KEY, JSON.stringify(samples)); } catch (_) { /* full: keep in memory */ }
  }
  const chartSubs = [];
  setInterval(() => { if (me && me.role !== "patient" && live.pools.size) sample(); }, SAMPLE_MS);

  function chartsView(panel) {
    let hours = 1;
    const winSel = h("select", { id: "chart-window", name: "window" },
      [1, 4, 8].map((n) => h("option", { value: n, selected: n === hours }, t("ch.h", n))));
    winSel.addEventListener("change", () => { hours = Number(winSel.value); draw(); });
    const utilGrid = h("div", { class: "charts" });
    const waitGrid = h("div", { class: "charts" });
    panel.append(h("h1", { class: "sr-only" }, t("view.charts")),
      h("div", { class: "chart-controls" }, h("label", { for: "chart-window" }, t("ch.window")), winSel),
      h("p", { class: "chart-limit" }, t("ch.limit")),
      h("h2", { class: "section-h" }, t("ch.util")), utilGrid,
      h("h2", { class: "section-h" }, t("ch.wait")), h("p", { class: "muted" }, t("ch.targets")), waitGrid);
    let visible = false;
    const draw = () => {
      if (!visible) return;
      const to = Date.now(), from = to - hours * 3600 * 1000;
      put(utilGrid, ...[...live.pools.values()].map((d) => {
        const pts = (samples.util[poolKey(d)] || []).filter((p) => p[0] >= from);
        const vals = pts.filter((p) => p[1] !== null).map((p) => p[1]);
        const nowV = vals.length ? vals[vals.length - 1] + "%" : "—";
        return chartCard(d.name, { key: poolKey(d), kind: "util" }, lineChart(pts, from, to, 100, null, (v) => v + "%",
          t("ch.utilAlt", d.name, nowV, vals.length ? Math.max(...vals) + "%" : "—")), t("ch.now", nowV), pts.length);
      }));
      put(waitGrid, ...PRIORITIES.map((p) => {
        const pts = (samples.wait[p] || []).filter((x) => x[0] >= from);
        const target = TARGETS_S[p];
        const mx = Math.max(target * 1.25, ...pts.map((x) => x[1]));
        const nowV = pts.length ? duration(pts[pts.length - 1][1]) : "—";
        return chartCard(prioText(p), { key: p, kind: "wait" }, lineChart(pts, from, to, mx, target, (v) => duration(v),
          t("ch.waitAlt", prioText(p), nowV, duration(target))), t("ch.now", nowV) + " · " + t("ch.target", duration(target)), pts.length);
      }));
    };
    chartSubs.push(draw);
    live.poolSubs.push(() => sample());
    return { shown: () => { visible = true; sample(); draw(); }, hidden: () => { visible = false; } };
  }

  function chartCard(title, data, svgEl, caption, n) {
    return h("figure", { class: "chart", data: { chart: data.key, kind: data.kind, samples: n } },
      h("figcaption", {}, h("strong", {}, title), " ", h("span", { class: "muted" }, caption + " · " + t("ch.samples", n))),
      svgEl);
  }

  // A step chart of [t, v] points from `from` to `to` (the value holds until the next sample),
  // y from 0 to `yMax`, with a dashed `target` line; `label` is its text for screen readers.
  function lineChart(pts, from, to, yMax, target, fy, label) {
    const W = 320, H = 130, L = 46, R = 8, T = 8, B = 22;
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
        else {
          const b = h("button", { type: "button", class: "btn-danger", data: { action: "revoke" } }, t("tok.revoke"));
          b.addEventListener("click", () => act(b, err, t("do.revoke"), t("tok.revokeBusy"),
            () => api("/api/tokens/" + encodeURIComponent(tk.id), { method: "DELETE" }), () => loadTokens()));
          cell = h("span", {}, h("span", { class: "badge tok-active" }, t("tok.active")), " ", b, err);
        }
        return h("tr", { data: { token: tk.id, revoked: tk.revoked_ms ? "1" : "" } },
          h("td", {}, h("code", { class: "id" }, tk.id)), h("td", {}, roleText(tk.role)),
          h("td", {}, tk.patient ? idCode(tk.patient) : "—"), h("td", {}, tk.label || ""),
          h("td", { class: "num" }, dateTime(tk.created_ms)), h("td", {}, cell));
      });
      put(tokTable, h("table", { class: "queue" }, h("caption", { class: "sr-only" }, t("tok.title")),
        h("thead", {}, h("tr", {}, ["tok.id", "tok.role", "q.patient", "tok.label", "tok.created", "u.status"]
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
      field(t("au.patient"), aPat), field(t("au.actor"), aActor), field(t("au.since"), aSince), field(t("au.limit"), aLimit), search, auErr);
    let lastSeq = null;
    const query = (after) => {
      const q = new URLSearchParams();
      if (aPat.value.trim()) q.set("patient", aPat.value.trim());
      if (aActor.value.trim()) q.set("actor", aActor.value.trim());
      if (aSince.value) q.set("since_ms", String(new Date(aSince.value).getTime()));
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
    return (STRINGS[lang]["kind." + kind] ? t("kind." + kind) : kind) + " " + scope.slice(i + 1);
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
        dt("al.where"), h("dd", {}, scopeText(a.scope)),
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
  window.addEventListener("pagehide", () => { closeStreams(); if (me && me.role !== "patient") saveSamples(); });
  window.addEventListener("pageshow", (ev) => { if (ev.persisted) location.reload(); });
})();
