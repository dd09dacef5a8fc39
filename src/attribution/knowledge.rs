/*!
Everything the classifier *knows* about the web, as data: which hosts are search engines, social
networks, webmail, AI assistants; which app packages stand for them; which query parameters carry
a search query or a paid click id; which ad-click redirectors mean a paid click; which
`utm_medium` spellings mean what.

It lives here, in one file of plain tables, so that adding a site is a one-line change reviewed
on its own, and so that the rules in [`super::referrer`] and [`super::channel`] read as logic, not
as lists. The tables were written for sluice from public knowledge of these sites; they are not
copied from another project's database.

Host patterns come in two forms:
- `"facebook.com"`: that host or any subdomain of it (`m.facebook.com`, `lm.facebook.com`);
- `"google.*"`: the *brand* `google` under any public suffix (`google.de`, `www.google.co.in`,
  `google.com.br`), and `"mail.yahoo.*"`: the `mail` subdomain of that brand
  (`mail.yahoo.co.jp`, `uk.mail.yahoo.com`). See [`super::referrer::registrable_split`] for how
  the public suffix is found.

Order matters: the first matching entry wins, so narrow entries (`gemini.google.com`,
`mail.google.com`) come before the broad brand they live under (`google.*`).
*/

/// What kind of site a host or a `utm_source` names; drives both the referrer type and the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SiteKind {
    /// A web search engine: referrer type `search`, channel Organic/Paid Search.
    Search,
    /// A social network: referrer type `social`, channel Organic/Paid Social.
    Social,
    /// A video platform: referrer type `social`, channel Organic/Paid Video (as GA4 does).
    Video,
    /// A webmail or mail app: referrer type `email`, channel Email.
    Email,
    /// An AI assistant: referrer type `ai`, channel AI Assistants.
    Ai,
    /// A marketplace: referrer type `link`, channel Organic/Paid Shopping.
    Shopping,
    /// A host under a known brand that is *not* what the brand is known for (Google Docs is not
    /// Google Search): referrer type `link`, channel Referral.
    Plain,
}

use SiteKind::{Ai, Email, Plain, Search, Shopping, Social, Video};

/// A host pattern (see the module docs), the canonical name it stands for, and its kind.
pub(crate) type Site = (&'static str, &'static str, SiteKind);

/// Known sites, first match wins.
pub(crate) const SITES: &[Site] = &[
    // AI assistants first: several live under search brands (gemini.google.com, copilot.microsoft.com).
    ("chatgpt.com", "chatgpt", Ai),
    ("chat.openai.com", "chatgpt", Ai),
    ("openai.com", "chatgpt", Ai),
    ("perplexity.ai", "perplexity", Ai),
    ("claude.ai", "claude", Ai),
    ("gemini.google.com", "gemini", Ai),
    ("bard.google.com", "gemini", Ai),
    ("aistudio.google.com", "gemini", Ai),
    ("notebooklm.google.com", "notebooklm", Ai),
    ("copilot.microsoft.com", "copilot", Ai),
    ("copilot.cloud.microsoft", "copilot", Ai),
    ("you.com", "you", Ai),
    ("phind.com", "phind", Ai),
    ("deepseek.com", "deepseek", Ai),
    ("meta.ai", "meta-ai", Ai),
    ("grok.com", "grok", Ai),
    ("chat.mistral.ai", "mistral", Ai),
    ("poe.com", "poe", Ai),
    ("chat.qwen.ai", "qwen", Ai),
    ("kimi.com", "kimi", Ai),
    ("kimi.moonshot.cn", "kimi", Ai),
    ("doubao.com", "doubao", Ai),
    ("character.ai", "character-ai", Ai),
    // Webmail, before the search brands they share (mail.google.com, mail.yahoo.com).
    ("mail.google.com", "gmail", Email),
    ("inbox.google.com", "gmail", Email),
    ("outlook.live.com", "outlook", Email),
    ("outlook.office.com", "outlook", Email),
    ("outlook.office365.com", "outlook", Email),
    ("outlook.cloud.microsoft", "outlook", Email),
    ("mail.live.com", "outlook", Email),
    ("mail.yahoo.*", "yahoo-mail", Email),
    ("mail.aol.*", "aol-mail", Email),
    ("mail.proton.me", "protonmail", Email),
    ("protonmail.com", "protonmail", Email),
    ("proton.me", "protonmail", Email),
    ("icloud.com", "icloud", Email),
    ("mail.zoho.*", "zoho-mail", Email),
    ("mail.yandex.*", "yandex-mail", Email),
    ("e.mail.ru", "mail-ru", Email),
    ("mail.gmx.net", "gmx", Email),
    ("navigator.gmx.net", "gmx", Email),
    ("gmx.*", "gmx", Email),
    ("web.de", "web-de", Email),
    // GMX, WEB.DE, 1&1 and mail.com (one company) send every link out of a mail through these.
    ("deref-gmx.net", "gmx", Email),
    ("deref-gmx.com", "gmx", Email),
    ("deref-web.de", "web-de", Email),
    ("deref-web-02.de", "web-de", Email),
    ("deref-1und1.de", "1und1", Email),
    ("deref-mail.com", "mail-com", Email),
    ("mail.com", "mail-com", Email),
    ("email.t-online.de", "t-online", Email),
    ("email.seznam.cz", "seznam-email", Email),
    ("mail.naver.com", "naver-mail", Email),
    ("mail.daum.net", "daum-mail", Email),
    ("mail.qq.com", "qq-mail", Email),
    ("mail.163.com", "163-mail", Email),
    ("mail.126.com", "126-mail", Email),
    ("mail.sina.*", "sina-mail", Email),
    ("touch.mail.ru", "mail-ru", Email),
    ("mail.rambler.ru", "rambler-mail", Email),
    ("mail.libero.it", "libero-mail", Email),
    ("mail.virgilio.it", "virgilio-mail", Email),
    ("webmail.freenet.de", "freenet-mail", Email),
    ("poczta.wp.pl", "wp-mail", Email),
    ("poczta.onet.pl", "onet-mail", Email),
    ("poczta.interia.pl", "interia-mail", Email),
    ("poczta.o2.pl", "o2-mail", Email),
    ("mail.biglobe.ne.jp", "biglobe-mail", Email),
    ("safelinks.protection.outlook.com", "outlook", Email),
    ("fastmail.com", "fastmail", Email),
    ("app.hey.com", "hey", Email),
    ("tuta.com", "tuta", Email),
    ("mail.tutanota.com", "tuta", Email),
    // Google properties that are not Google Search.
    ("docs.google.com", "google-docs", Plain),
    ("drive.google.com", "google-drive", Plain),
    ("sites.google.com", "google-sites", Plain),
    ("groups.google.com", "google-groups", Plain),
    ("calendar.google.com", "google-calendar", Plain),
    ("meet.google.com", "google-meet", Plain),
    ("play.google.com", "google-play", Plain),
    ("accounts.google.com", "google-accounts", Plain),
    ("developers.google.com", "google-developers", Plain),
    ("scholar.google.*", "google-scholar", Search),
    ("news.google.*", "google-news", Plain),
    // Narrow hosts under search brands that are something else.
    ("tieba.baidu.com", "tieba", Social),
    ("shopping.naver.com", "naver-shopping", Shopping),
    ("shopping.yahoo.*", "yahoo-shopping", Shopping),
    // Search engines.
    ("google.*", "google", Search),
    ("bing.com", "bing", Search),
    ("search.yahoo.*", "yahoo", Search),
    ("yahoo.*", "yahoo", Search),
    ("duckduckgo.com", "duckduckgo", Search),
    ("duck.com", "duckduckgo", Search),
    ("baidu.com", "baidu", Search),
    ("yandex.*", "yandex", Search),
    ("ya.ru", "yandex", Search),
    ("ecosia.org", "ecosia", Search),
    ("search.brave.com", "brave", Search),
    ("qwant.com", "qwant", Search),
    ("naver.com", "naver", Search),
    ("seznam.cz", "seznam", Search),
    ("startpage.com", "startpage", Search),
    ("ask.com", "ask", Search),
    ("aol.*", "aol", Search),
    ("kagi.com", "kagi", Search),
    ("mojeek.com", "mojeek", Search),
    ("sogou.com", "sogou", Search),
    ("so.com", "360", Search),
    ("daum.net", "daum", Search),
    ("search.lycos.com", "lycos", Search),
    ("dogpile.com", "dogpile", Search),
    ("metager.org", "metager", Search),
    ("swisscows.com", "swisscows", Search),
    ("presearch.com", "presearch", Search),
    ("coccoc.com", "coccoc", Search),
    ("360.cn", "360", Search),
    ("sm.cn", "shenma", Search),
    ("petalsearch.com", "petal", Search),
    ("search.goo.ne.jp", "goo", Search),
    ("search.biglobe.ne.jp", "biglobe", Search),
    ("search.nifty.com", "nifty", Search),
    ("nova.rambler.ru", "rambler", Search),
    ("go.mail.ru", "mail-ru-search", Search),
    ("szukaj.onet.pl", "onet", Search),
    ("search.avg.com", "avg", Search),
    ("search.lilo.org", "lilo", Search),
    ("yep.com", "yep", Search),
    ("ixquick.com", "startpage", Search),
    // Video platforms (social referrers, video channels).
    ("youtube.com", "youtube", Video),
    ("youtu.be", "youtube", Video),
    ("youtube-nocookie.com", "youtube", Video),
    ("vimeo.com", "vimeo", Video),
    ("twitch.tv", "twitch", Video),
    ("dailymotion.com", "dailymotion", Video),
    ("bilibili.com", "bilibili", Video),
    ("b23.tv", "bilibili", Video),
    ("justin.tv", "twitch", Video),
    ("dai.ly", "dailymotion", Video),
    ("netflix.com", "netflix", Video),
    ("hulu.com", "hulu", Video),
    ("disneyplus.com", "disneyplus", Video),
    ("ted.com", "ted", Video),
    ("wistia.com", "wistia", Video),
    ("wistia.net", "wistia", Video),
    ("iqiyi.com", "iqiyi", Video),
    ("iq.com", "iqiyi", Video),
    ("youku.com", "youku", Video),
    ("nicovideo.jp", "niconico", Video),
    ("rumble.com", "rumble", Video),
    ("kick.com", "kick", Video),
    ("crackle.com", "crackle", Video),
    ("curiositystream.com", "curiositystream", Video),
    ("veoh.com", "veoh", Video),
    // Social networks.
    ("facebook.com", "facebook", Social),
    ("fb.com", "facebook", Social),
    ("fb.me", "facebook", Social),
    ("fb.watch", "facebook", Social),
    ("messenger.com", "facebook", Social),
    ("instagram.com", "instagram", Social),
    ("instagr.am", "instagram", Social),
    ("linkedin.com", "linkedin", Social),
    ("lnkd.in", "linkedin", Social),
    ("twitter.com", "x", Social),
    ("x.com", "x", Social),
    ("t.co", "x", Social),
    ("reddit.com", "reddit", Social),
    ("redd.it", "reddit", Social),
    ("pinterest.*", "pinterest", Social),
    ("pin.it", "pinterest", Social),
    ("tiktok.com", "tiktok", Social),
    ("snapchat.com", "snapchat", Social),
    ("quora.com", "quora", Social),
    ("tumblr.com", "tumblr", Social),
    ("t.umblr.com", "tumblr", Social),
    ("vk.com", "vk", Social),
    ("vk.ru", "vk", Social),
    ("vkontakte.ru", "vk", Social),
    ("whatsapp.com", "whatsapp", Social),
    ("wa.me", "whatsapp", Social),
    ("telegram.org", "telegram", Social),
    ("telegram.me", "telegram", Social),
    ("t.me", "telegram", Social),
    ("mastodon.*", "mastodon", Social),
    ("mstdn.social", "mastodon", Social),
    ("joinmastodon.org", "mastodon", Social),
    ("threads.net", "threads", Social),
    ("threads.com", "threads", Social),
    ("bsky.app", "bluesky", Social),
    ("bsky.social", "bluesky", Social),
    ("discord.com", "discord", Social),
    ("discord.gg", "discord", Social),
    ("discordapp.com", "discord", Social),
    ("slack.com", "slack", Social),
    ("weibo.com", "weibo", Social),
    ("weibo.cn", "weibo", Social),
    ("t.cn", "weibo", Social),
    ("xing.com", "xing", Social),
    ("news.ycombinator.com", "hackernews", Social),
    ("producthunt.com", "producthunt", Social),
    ("medium.com", "medium", Social),
    ("line.me", "line", Social),
    ("ok.ru", "ok", Social),
    ("odnoklassniki.ru", "ok", Social),
    ("douyin.com", "douyin", Social),
    ("nextdoor.com", "nextdoor", Social),
    ("stackoverflow.com", "stackoverflow", Social),
    ("stackexchange.com", "stackexchange", Social),
    ("kakao.com", "kakao", Social),
    ("qzone.qq.com", "qzone", Social),
    ("douban.com", "douban", Social),
    ("zhihu.com", "zhihu", Social),
    ("xiaohongshu.com", "xiaohongshu", Social),
    ("wechat.com", "wechat", Social),
    ("weixin.qq.com", "wechat", Social),
    ("viber.com", "viber", Social),
    ("flickr.com", "flickr", Social),
    ("deviantart.com", "deviantart", Social),
    ("dribbble.com", "dribbble", Social),
    ("goodreads.com", "goodreads", Social),
    ("meetup.com", "meetup", Social),
    ("disqus.com", "disqus", Social),
    ("yelp.*", "yelp", Social),
    ("tripadvisor.*", "tripadvisor", Social),
    ("glassdoor.*", "glassdoor", Social),
    // Marketplaces.
    ("amazon.*", "amazon", Shopping),
    ("ebay.*", "ebay", Shopping),
    ("amzn.to", "amazon", Shopping),
    ("amzn.eu", "amazon", Shopping),
    ("a.co", "amazon", Shopping),
    ("etsy.com", "etsy", Shopping),
    ("etsy.me", "etsy", Shopping),
    ("aliexpress.*", "aliexpress", Shopping),
    ("alibaba.com", "alibaba", Shopping),
    ("walmart.*", "walmart", Shopping),
    ("shopping.google.*", "google-shopping", Shopping),
    ("shopify.com", "shopify", Shopping),
    ("shop.app", "shopify", Shopping),
    ("mercadolibre.*", "mercadolibre", Shopping),
    ("mercadolivre.*", "mercadolibre", Shopping),
    ("rakuten.*", "rakuten", Shopping),
    ("idealo.*", "idealo", Shopping),
    ("kelkoo.*", "kelkoo", Shopping),
    ("pricerunner.*", "pricerunner", Shopping),
    ("geizhals.*", "geizhals", Shopping),
    ("allegro.pl", "allegro", Shopping),
    ("bol.com", "bol", Shopping),
    ("zalando.*", "zalando", Shopping),
    ("flipkart.com", "flipkart", Shopping),
    ("taobao.com", "taobao", Shopping),
    ("tmall.com", "tmall", Shopping),
    ("jd.com", "jd", Shopping),
    ("temu.com", "temu", Shopping),
    ("shein.com", "shein", Shopping),
];

/// An ad platform's click redirector: a referrer on it means the visitor clicked an ad, even
/// when the landing URL carries no click id (auto-tagging off, or stripped by a redirect).
pub(crate) struct AdRedirect {
    /// A host pattern, as in [`SITES`].
    pub host: &'static str,
    /// The path the redirector lives under (`""`: any path on that host).
    pub path: &'static str,
    /// What the click stands for, as a click id would (its `param` is unused).
    pub click: ClickId,
}

const fn redirect(host: &'static str, path: &'static str, click: ClickId) -> AdRedirect {
    AdRedirect { host, path, click }
}

/// Ad-click redirectors, checked before [`SITES`]. A referrer on one of them is classified like
/// the platform's own click id (`gclid`, `dclid`, `msclkid`).
///
/// Bing is only paid through `/aclk`: `www.bing.com/ck/a?…` is the redirector Bing puts in front
/// of *every* result, organic ones included, so it stays Organic Search.
pub(crate) const AD_REDIRECTS: &[AdRedirect] = &[
    redirect("googleadservices.com", "", click("", "google", Search, "cpc")),
    redirect("doubleclick.net", "", click("", "google", Search, "display")),
    redirect("googlesyndication.com", "", click("", "google", Search, "display")),
    redirect("bing.com", "/aclk", click("", "microsoft", Search, "cpc")),
    redirect("paid.outbrain.com", "", click("", "outbrain", Plain, "cpc")),
    redirect("trc.taboola.com", "", click("", "taboola", Plain, "cpc")),
];

/// Registrable domains under which each subdomain is a different owner's site (hosting
/// platforms that the short public-suffix heuristic does not know): a referrer on a sibling
/// subdomain of one of these is *not* the same site.
pub(crate) const SHARED_HOSTING: &[&str] = &[
    "github.io",
    "gitlab.io",
    "pages.dev",
    "workers.dev",
    "vercel.app",
    "netlify.app",
    "herokuapp.com",
    "onrender.com",
    "fly.dev",
    "web.app",
    "firebaseapp.com",
    "appspot.com",
    "azurewebsites.net",
    "cloudfront.net",
    "amazonaws.com",
    "blogspot.com",
    "wordpress.com",
    "substack.com",
    "tumblr.com",
    "medium.com",
    "wixsite.com",
    "squarespace.com",
    "myshopify.com",
    "webflow.io",
    "glitch.me",
    "repl.co",
    "ngrok.io",
    "ngrok-free.app",
];

/// Mobile apps, by Android package (`android-app://PACKAGE/…`) or iOS App Store id
/// (`ios-app://ID/…`): the canonical name and kind of the site the app stands for.
pub(crate) const APPS: &[Site] = &[
    ("com.google.android.googlequicksearchbox", "google", Search),
    ("com.google.android.gm", "gmail", Email),
    ("com.google.android.youtube", "youtube", Video),
    ("com.google.android.apps.bard", "gemini", Ai),
    ("com.linkedin.android", "linkedin", Social),
    ("com.facebook.katana", "facebook", Social),
    ("com.facebook.lite", "facebook", Social),
    ("com.facebook.orca", "facebook", Social),
    ("com.instagram.android", "instagram", Social),
    ("com.twitter.android", "x", Social),
    ("com.reddit.frontpage", "reddit", Social),
    ("com.pinterest", "pinterest", Social),
    ("com.zhiliaoapp.musically", "tiktok", Social),
    ("com.ss.android.ugc.trill", "tiktok", Social),
    ("com.snapchat.android", "snapchat", Social),
    ("com.whatsapp", "whatsapp", Social),
    ("org.telegram.messenger", "telegram", Social),
    ("com.slack", "slack", Social),
    ("com.microsoft.office.outlook", "outlook", Email),
    ("com.yahoo.mobile.client.android.mail", "yahoo-mail", Email),
    ("ch.protonmail.android", "protonmail", Email),
    ("com.microsoft.bing", "bing", Search),
    ("com.microsoft.copilot", "copilot", Ai),
    ("com.duckduckgo.mobile.android", "duckduckgo", Search),
    ("com.openai.chatgpt", "chatgpt", Ai),
    ("ai.perplexity.app.android", "perplexity", Ai),
    ("com.anthropic.claude", "claude", Ai),
    // iOS referrers name the App Store id.
    ("284815942", "google", Search),
    ("422689480", "gmail", Email),
    ("544007664", "youtube", Video),
    ("288429040", "linkedin", Social),
    ("284882215", "facebook", Social),
    ("389801252", "instagram", Social),
    ("333903271", "x", Social),
    ("1064216828", "reddit", Social),
    ("429047995", "pinterest", Social),
    ("835599320", "tiktok", Social),
    ("447188370", "snapchat", Social),
    ("310633997", "whatsapp", Social),
    ("686449807", "telegram", Social),
    ("618783545", "slack", Social),
    ("951937596", "outlook", Email),
    ("6448311069", "chatgpt", Ai),
];

/// Query parameters that carry the search terms, per engine (first non-empty one wins).
pub(crate) const SEARCH_QUERY_PARAMS: &[(&str, &[&str])] = &[
    ("google", &["q"]),
    ("bing", &["q"]),
    ("yahoo", &["p", "q"]),
    ("duckduckgo", &["q"]),
    ("baidu", &["wd", "word"]),
    ("yandex", &["text"]),
    ("ecosia", &["q"]),
    ("brave", &["q"]),
    ("qwant", &["q"]),
    ("naver", &["query"]),
    ("seznam", &["q"]),
    ("startpage", &["query", "q"]),
    ("ask", &["q"]),
    ("aol", &["q", "query"]),
    ("kagi", &["q"]),
    ("mojeek", &["q"]),
    ("sogou", &["query"]),
    ("360", &["q"]),
    ("daum", &["q"]),
];

/// Where a click id says the visit came from.
pub(crate) struct ClickId {
    /// The landing-URL query parameter.
    pub param: &'static str,
    /// The ad platform (or site) that adds it.
    pub network: &'static str,
    /// The kind of the platform, for the channel group.
    pub kind: Option<SiteKind>,
    /// The medium it implies: `cpc`, `display`, `affiliate`, or `None` when it is not paid.
    pub medium: Option<&'static str>,
}

const fn click(param: &'static str, network: &'static str, kind: SiteKind, medium: &'static str) -> ClickId {
    ClickId { param, network, kind: Some(kind), medium: Some(medium) }
}

/// Click ids on the landing URL, in order of precedence.
///
/// `fbclid` and `igshid` are deliberately *not* paid: Facebook appends `fbclid` to every outbound
/// link, organic posts included, and Instagram's share links carry `igshid`. They only tell us the
/// visit came from that network (useful when the in-app browser sends no referrer). Paid Meta
/// traffic is recognised by its `utm_medium` (e.g. `paid_social`, `cpc`).
pub(crate) const CLICK_IDS: &[ClickId] = &[
    click("gclid", "google", Search, "cpc"),
    click("gbraid", "google", Search, "cpc"),
    click("wbraid", "google", Search, "cpc"),
    click("dclid", "google", Search, "display"),
    click("msclkid", "microsoft", Search, "cpc"),
    click("yclid", "yandex", Search, "cpc"),
    click("ttclid", "tiktok", Social, "cpc"),
    click("li_fat_id", "linkedin", Social, "cpc"),
    click("twclid", "x", Social, "cpc"),
    click("sccid", "snapchat", Social, "cpc"),
    click("epik", "pinterest", Social, "cpc"),
    click("rdt_cid", "reddit", Social, "cpc"),
    click("irclickid", "impact", Plain, "affiliate"),
    ClickId { param: "fbclid", network: "facebook", kind: Some(Social), medium: None },
    ClickId { param: "igshid", network: "instagram", kind: Some(Social), medium: None },
];

/// `utm_source` spellings that are not a canonical name from [`SITES`], mapped to one.
pub(crate) const SOURCE_ALIASES: &[(&str, &str)] = &[
    ("adwords", "google"),
    ("googleads", "google"),
    ("google_ads", "google"),
    ("google-ads", "google"),
    ("gads", "google"),
    ("fb", "facebook"),
    ("meta", "facebook"),
    ("ig", "instagram"),
    ("twitter", "x"),
    ("tw", "x"),
    ("li", "linkedin"),
    ("yt", "youtube"),
    ("openai", "chatgpt"),
    ("gemini.google", "gemini"),
    ("microsoft", "bing"),
    ("msads", "bing"),
];

/// Second-level labels that, under a two-letter country TLD, form a public suffix: `co.uk`,
/// `com.br`, `co.in`, `com.au`, `co.jp`, `ne.jp`, `org.uk`, `gov.uk`, `ac.uk`, `com.tr` ….
///
/// Why a heuristic and not the Public Suffix List: the classifier only needs the *brand* label of
/// well-known sites (`google` in `www.google.co.in`). The full list has ~10,000 entries, changes
/// monthly and would be another dependency; this rule covers every country domain the big sites
/// use. A rare domain split wrongly can turn a `link` into another `link` with a different brand
/// label, or make two sites under a suffix the rule does not know count as sibling subdomains of
/// one site (`internal`); the hosting platforms where that would matter are in [`SHARED_HOSTING`].
/// Own domains and referral exclusions are matched by plain suffix and are not affected.
pub(crate) const COUNTRY_SECOND_LEVELS: &[&str] =
    &["co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go", "gob", "mil", "nic", "gen", "ltd", "plc"];

/// `utm_medium` values (lower-cased, exact) that mean display advertising (GA4's Display rule).
pub(crate) const DISPLAY_MEDIUMS: &[&str] = &["display", "banner", "expandable", "interstitial", "cpm"];

/// `utm_medium` values that mean an organic social post (GA4's Organic Social rule).
pub(crate) const SOCIAL_MEDIUMS: &[&str] =
    &["social", "social-network", "social-media", "sm", "social network", "social media", "organic_social"];

/// `utm_source`/`utm_medium` values that mean e-mail (GA4's Email rule).
pub(crate) const EMAIL_NAMES: &[&str] = &["email", "e-mail", "e_mail", "e mail"];

/// `utm_medium` values that mean a referral (GA4's Referral rule).
pub(crate) const REFERRAL_MEDIUMS: &[&str] = &["referral", "app", "link"];

/// `utm_medium` extra paid values beyond GA4's pattern (`*cp*`, `ppc`, `retargeting`, `paid*`).
pub(crate) const PAID_MEDIUMS: &[&str] = &["ppc", "retargeting", "sem", "ads", "ad"];

/// GA4's paid-medium pattern `^(.*cp.*|ppc|retargeting|paid.*)$`, plus a few common spellings.
pub(crate) fn is_paid_medium(medium: &str) -> bool {
    medium.contains("cp") || medium.starts_with("paid") || PAID_MEDIUMS.contains(&medium)
}
