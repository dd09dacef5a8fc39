/*!
The classifier's case table: one line per landing URL + referrer, with the expected referrer
type, name (engine, network, client, assistant or ad network), host and channel group.

Page column: `""` is the default landing page `https://www.example.com/`, a value starting with
`?` is that page with this query, `-` is no page URL. Referrer column: `-` is no referrer. Name
and host: `""` means absent. The settings own `example.com` and `mybrand.io` and exclude
`paypal.com`.

Besides the main table, one table per kind of source the classifier must know (search engines,
social networks, video platforms, marketplaces, webmail, ad-click redirectors, social link
wrappers, webmail redirectors, sibling subdomains), each checked by a test named for the
behaviour it pins down.
*/

use proptest::prelude::*;

use super::{AttributionSettings, classify};

const PAGE: &str = "https://www.example.com/";

/// Page, referrer, expected type, name, host and channel (see the module docs).
type Case = (&'static str, &'static str, &'static str, &'static str, &'static str, &'static str);

#[rustfmt::skip]
const CASES: &[Case] = &[
    // Search engines, country domains, case, ports.
    ("", "https://www.google.com/", "search", "google", "www.google.com", "Organic Search"),
    ("", "https://www.google.co.in/", "search", "google", "www.google.co.in", "Organic Search"),
    ("", "https://google.de/", "search", "google", "google.de", "Organic Search"),
    ("", "https://www.google.com.br/", "search", "google", "www.google.com.br", "Organic Search"),
    ("", "https://www.google.co.uk/search?q=x", "search", "google", "www.google.co.uk", "Organic Search"),
    ("", "https://www.google.com.au/", "search", "google", "www.google.com.au", "Organic Search"),
    ("", "https://www.google.co.jp/", "search", "google", "www.google.co.jp", "Organic Search"),
    ("", "https://WWW.GOOGLE.FR/", "search", "google", "www.google.fr", "Organic Search"),
    ("", "https://www.google.com:443/", "search", "google", "www.google.com", "Organic Search"),
    ("", "http://google.com.ng/", "search", "google", "google.com.ng", "Organic Search"),
    ("", "https://www.google.com.", "search", "google", "www.google.com", "Organic Search"),
    ("", "www.google.com/", "search", "google", "www.google.com", "Organic Search"),
    ("", "https://www.bing.com/search?q=a", "search", "bing", "www.bing.com", "Organic Search"),
    ("", "https://cn.bing.com/", "search", "bing", "cn.bing.com", "Organic Search"),
    ("", "https://search.yahoo.com/search?p=x", "search", "yahoo", "search.yahoo.com", "Organic Search"),
    ("", "https://uk.search.yahoo.com/", "search", "yahoo", "uk.search.yahoo.com", "Organic Search"),
    ("", "https://www.yahoo.co.jp/", "search", "yahoo", "www.yahoo.co.jp", "Organic Search"),
    ("", "https://duckduckgo.com/", "search", "duckduckgo", "duckduckgo.com", "Organic Search"),
    ("", "https://www.baidu.com/s?wd=x", "search", "baidu", "www.baidu.com", "Organic Search"),
    ("", "https://m.baidu.com/", "search", "baidu", "m.baidu.com", "Organic Search"),
    ("", "https://yandex.ru/search/?text=x", "search", "yandex", "yandex.ru", "Organic Search"),
    ("", "https://yandex.com.tr/", "search", "yandex", "yandex.com.tr", "Organic Search"),
    ("", "https://ya.ru/", "search", "yandex", "ya.ru", "Organic Search"),
    ("", "https://www.ecosia.org/search?q=x", "search", "ecosia", "www.ecosia.org", "Organic Search"),
    ("", "https://search.brave.com/search?q=x", "search", "brave", "search.brave.com", "Organic Search"),
    ("", "https://www.qwant.com/?q=x", "search", "qwant", "www.qwant.com", "Organic Search"),
    ("", "https://search.naver.com/search.naver?query=x", "search", "naver", "search.naver.com", "Organic Search"),
    ("", "https://search.seznam.cz/?q=x", "search", "seznam", "search.seznam.cz", "Organic Search"),
    ("", "https://www.startpage.com/", "search", "startpage", "www.startpage.com", "Organic Search"),
    ("", "https://www.ask.com/web?q=x", "search", "ask", "www.ask.com", "Organic Search"),
    ("", "https://search.aol.com/aol/search?q=x", "search", "aol", "search.aol.com", "Organic Search"),
    ("", "https://kagi.com/search?q=x", "search", "kagi", "kagi.com", "Organic Search"),
    ("", "https://www.sogou.com/web?query=x", "search", "sogou", "www.sogou.com", "Organic Search"),
    ("", "https://scholar.google.com/", "search", "google-scholar", "scholar.google.com", "Organic Search"),
    // Search apps.
    ("", "android-app://com.google.android.googlequicksearchbox", "search", "google", "com.google.android.googlequicksearchbox", "Organic Search"),
    ("", "android-app://com.google.android.googlequicksearchbox/https/www.google.com", "search", "google", "com.google.android.googlequicksearchbox", "Organic Search"),
    ("", "ios-app://284815942/", "search", "google", "284815942", "Organic Search"),
    ("", "android-app://com.microsoft.bing", "search", "bing", "com.microsoft.bing", "Organic Search"),
    // Social networks and video platforms.
    ("", "https://www.facebook.com/", "social", "facebook", "www.facebook.com", "Organic Social"),
    ("", "https://m.facebook.com/", "social", "facebook", "m.facebook.com", "Organic Social"),
    ("", "https://l.facebook.com/l.php?u=x", "social", "facebook", "l.facebook.com", "Organic Social"),
    ("", "https://lm.facebook.com/", "social", "facebook", "lm.facebook.com", "Organic Social"),
    ("", "https://web.facebook.com/", "social", "facebook", "web.facebook.com", "Organic Social"),
    ("", "https://FACEBOOK.COM/", "social", "facebook", "facebook.com", "Organic Social"),
    ("", "https://www.facebook.com:8443/x", "social", "facebook", "www.facebook.com", "Organic Social"),
    ("", "https://www.instagram.com/", "social", "instagram", "www.instagram.com", "Organic Social"),
    ("", "https://l.instagram.com/", "social", "instagram", "l.instagram.com", "Organic Social"),
    ("", "https://www.linkedin.com/", "social", "linkedin", "www.linkedin.com", "Organic Social"),
    ("", "https://lnkd.in/abc", "social", "linkedin", "lnkd.in", "Organic Social"),
    ("", "https://twitter.com/", "social", "x", "twitter.com", "Organic Social"),
    ("", "https://x.com/", "social", "x", "x.com", "Organic Social"),
    ("", "https://t.co/abc", "social", "x", "t.co", "Organic Social"),
    ("", "https://www.reddit.com/r/rust/", "social", "reddit", "www.reddit.com", "Organic Social"),
    ("", "https://old.reddit.com/", "social", "reddit", "old.reddit.com", "Organic Social"),
    ("", "https://out.reddit.com/", "social", "reddit", "out.reddit.com", "Organic Social"),
    ("", "https://www.pinterest.com/", "social", "pinterest", "www.pinterest.com", "Organic Social"),
    ("", "https://www.pinterest.co.uk/", "social", "pinterest", "www.pinterest.co.uk", "Organic Social"),
    ("", "https://pin.it/x", "social", "pinterest", "pin.it", "Organic Social"),
    ("", "https://www.tiktok.com/", "social", "tiktok", "www.tiktok.com", "Organic Social"),
    ("", "https://www.snapchat.com/", "social", "snapchat", "www.snapchat.com", "Organic Social"),
    ("", "https://www.quora.com/", "social", "quora", "www.quora.com", "Organic Social"),
    ("", "https://www.tumblr.com/", "social", "tumblr", "www.tumblr.com", "Organic Social"),
    ("", "https://vk.com/", "social", "vk", "vk.com", "Organic Social"),
    ("", "https://web.whatsapp.com/", "social", "whatsapp", "web.whatsapp.com", "Organic Social"),
    ("", "https://t.me/x", "social", "telegram", "t.me", "Organic Social"),
    ("", "https://web.telegram.org/", "social", "telegram", "web.telegram.org", "Organic Social"),
    ("", "https://mastodon.social/@x", "social", "mastodon", "mastodon.social", "Organic Social"),
    ("", "https://www.threads.net/", "social", "threads", "www.threads.net", "Organic Social"),
    ("", "https://bsky.app/", "social", "bluesky", "bsky.app", "Organic Social"),
    ("", "https://news.ycombinator.com/", "social", "hackernews", "news.ycombinator.com", "Organic Social"),
    ("", "https://discord.com/channels/1", "social", "discord", "discord.com", "Organic Social"),
    ("", "https://medium.com/", "social", "medium", "medium.com", "Organic Social"),
    ("", "https://www.youtube.com/", "social", "youtube", "www.youtube.com", "Organic Video"),
    ("", "https://m.youtube.com/", "social", "youtube", "m.youtube.com", "Organic Video"),
    ("", "https://youtu.be/x", "social", "youtube", "youtu.be", "Organic Video"),
    ("", "https://vimeo.com/", "social", "vimeo", "vimeo.com", "Organic Video"),
    ("", "https://www.twitch.tv/", "social", "twitch", "www.twitch.tv", "Organic Video"),
    // Social apps.
    ("", "android-app://com.linkedin.android", "social", "linkedin", "com.linkedin.android", "Organic Social"),
    ("", "android-app://com.facebook.katana", "social", "facebook", "com.facebook.katana", "Organic Social"),
    ("", "android-app://com.twitter.android/", "social", "x", "com.twitter.android", "Organic Social"),
    ("", "android-app://com.instagram.android", "social", "instagram", "com.instagram.android", "Organic Social"),
    ("", "android-app://com.reddit.frontpage", "social", "reddit", "com.reddit.frontpage", "Organic Social"),
    ("", "android-app://com.google.android.youtube", "social", "youtube", "com.google.android.youtube", "Organic Video"),
    ("", "ios-app://284882215/", "social", "facebook", "284882215", "Organic Social"),
    ("", "ios-app://333903271/twitter/x", "social", "x", "333903271", "Organic Social"),
    // Webmail and mail apps.
    ("", "https://mail.google.com/", "email", "gmail", "mail.google.com", "Email"),
    ("", "https://mail.google.com/mail/u/0/", "email", "gmail", "mail.google.com", "Email"),
    ("", "https://outlook.live.com/", "email", "outlook", "outlook.live.com", "Email"),
    ("", "https://outlook.office.com/", "email", "outlook", "outlook.office.com", "Email"),
    ("", "https://outlook.office365.com/", "email", "outlook", "outlook.office365.com", "Email"),
    ("", "https://mail.yahoo.com/", "email", "yahoo-mail", "mail.yahoo.com", "Email"),
    ("", "https://mail.yahoo.co.jp/", "email", "yahoo-mail", "mail.yahoo.co.jp", "Email"),
    ("", "https://mail.proton.me/", "email", "protonmail", "mail.proton.me", "Email"),
    ("", "https://www.icloud.com/mail", "email", "icloud", "www.icloud.com", "Email"),
    ("", "https://mail.aol.com/", "email", "aol-mail", "mail.aol.com", "Email"),
    ("", "https://mail.zoho.com/", "email", "zoho-mail", "mail.zoho.com", "Email"),
    ("", "https://mail.yandex.ru/", "email", "yandex-mail", "mail.yandex.ru", "Email"),
    ("", "https://app.fastmail.com/", "email", "fastmail", "app.fastmail.com", "Email"),
    ("", "android-app://com.google.android.gm", "email", "gmail", "com.google.android.gm", "Email"),
    ("", "ios-app://422689480/", "email", "gmail", "422689480", "Email"),
    ("", "android-app://com.microsoft.office.outlook", "email", "outlook", "com.microsoft.office.outlook", "Email"),
    // AI assistants (gemini.google.com is not Google Search).
    ("", "https://chatgpt.com/", "ai", "chatgpt", "chatgpt.com", "AI Assistants"),
    ("", "https://chat.openai.com/", "ai", "chatgpt", "chat.openai.com", "AI Assistants"),
    ("", "https://www.perplexity.ai/", "ai", "perplexity", "www.perplexity.ai", "AI Assistants"),
    ("", "https://claude.ai/", "ai", "claude", "claude.ai", "AI Assistants"),
    ("", "https://gemini.google.com/", "ai", "gemini", "gemini.google.com", "AI Assistants"),
    ("", "https://copilot.microsoft.com/", "ai", "copilot", "copilot.microsoft.com", "AI Assistants"),
    ("", "https://you.com/", "ai", "you", "you.com", "AI Assistants"),
    ("", "https://www.phind.com/", "ai", "phind", "www.phind.com", "AI Assistants"),
    ("", "https://chat.deepseek.com/", "ai", "deepseek", "chat.deepseek.com", "AI Assistants"),
    ("", "https://www.meta.ai/", "ai", "meta-ai", "www.meta.ai", "AI Assistants"),
    ("", "https://grok.com/", "ai", "grok", "grok.com", "AI Assistants"),
    ("", "https://chat.mistral.ai/", "ai", "mistral", "chat.mistral.ai", "AI Assistants"),
    ("", "https://poe.com/", "ai", "poe", "poe.com", "AI Assistants"),
    ("", "android-app://com.openai.chatgpt", "ai", "chatgpt", "com.openai.chatgpt", "AI Assistants"),
    ("?utm_source=chatgpt.com", "-", "ai", "chatgpt", "", "AI Assistants"),
    ("?utm_source=perplexity", "", "ai", "perplexity", "", "AI Assistants"),
    // Click ids: paid by default; fbclid is organic.
    ("?gclid=abc", "https://www.google.com/", "ad", "google", "www.google.com", "Paid Search"),
    ("?gclid=abc", "-", "ad", "google", "", "Paid Search"),
    ("?GCLID=abc", "-", "ad", "google", "", "Paid Search"),
    ("?gbraid=x", "-", "ad", "google", "", "Paid Search"),
    ("?wbraid=x", "-", "ad", "google", "", "Paid Search"),
    ("?dclid=x", "https://ad.doubleclick.net/", "ad", "google", "ad.doubleclick.net", "Display"),
    ("?msclkid=x", "https://www.bing.com/", "ad", "microsoft", "www.bing.com", "Paid Search"),
    ("?ttclid=x", "https://www.tiktok.com/", "ad", "tiktok", "www.tiktok.com", "Paid Social"),
    ("?li_fat_id=x", "https://www.linkedin.com/", "ad", "linkedin", "www.linkedin.com", "Paid Social"),
    ("?twclid=x", "https://t.co/x", "ad", "x", "t.co", "Paid Social"),
    ("?yclid=x", "https://yandex.ru/", "ad", "yandex", "yandex.ru", "Paid Search"),
    ("?epik=x", "https://www.pinterest.com/", "ad", "pinterest", "www.pinterest.com", "Paid Social"),
    ("?irclickid=x", "https://partner.example.net/", "ad", "impact", "partner.example.net", "Affiliates"),
    ("?gclid=x&utm_source=newsletter&utm_medium=email", "-", "ad", "google", "", "Paid Search"),
    ("?gclid=", "https://www.google.com/", "search", "google", "www.google.com", "Organic Search"),
    ("?fbclid=x", "https://l.facebook.com/", "social", "facebook", "l.facebook.com", "Organic Social"),
    ("?fbclid=x", "-", "social", "facebook", "", "Organic Social"),
    ("?igshid=x", "", "social", "instagram", "", "Organic Social"),
    ("?fbclid=x&utm_source=facebook&utm_medium=paid_social", "https://m.facebook.com/", "ad", "facebook", "m.facebook.com", "Paid Social"),
    ("-", "https://www.google.com/", "search", "google", "www.google.com", "Organic Search"),
    // A landing URL that does not parse still gives its tags.
    ("https://exa mple.com/?gclid=1", "-", "ad", "google", "", "Paid Search"),
    // Paid utm_medium.
    ("?utm_source=google&utm_medium=cpc", "-", "ad", "google", "", "Paid Search"),
    ("?utm_source=google&utm_medium=cpc", "https://www.google.com/", "ad", "google", "www.google.com", "Paid Search"),
    ("?utm_source=Google&utm_medium=CPC", "-", "ad", "google", "", "Paid Search"),
    ("?utm_source=bing&utm_medium=ppc", "-", "ad", "bing", "", "Paid Search"),
    ("?utm_source=facebook&utm_medium=paid_social", "-", "ad", "facebook", "", "Paid Social"),
    ("?utm_source=fb&utm_medium=paid", "-", "ad", "facebook", "", "Paid Social"),
    ("?utm_source=linkedin&utm_medium=paidsocial", "-", "ad", "linkedin", "", "Paid Social"),
    ("?utm_source=youtube&utm_medium=cpv", "-", "ad", "youtube", "", "Paid Video"),
    ("?utm_source=dsp&utm_medium=display", "-", "ad", "dsp", "", "Display"),
    ("?utm_source=partner&utm_medium=banner", "-", "ad", "partner", "", "Display"),
    ("?utm_source=criteo&utm_medium=cpm", "-", "ad", "criteo", "", "Display"),
    ("?utm_source=taboola&utm_medium=cpa", "-", "ad", "taboola", "", "Paid Other"),
    ("?utm_medium=cpc", "https://www.google.com/", "ad", "google", "www.google.com", "Paid Search"),
    ("?utm_source=amazon&utm_medium=cpc", "-", "ad", "amazon", "", "Paid Shopping"),
    ("?utm_source=google&utm_medium=cpc&utm_campaign=pmax_cross-network", "-", "ad", "google", "", "Cross-network"),
    ("?utm_source=google&utm_medium=cpc&utm_campaign=shopping_q4", "-", "ad", "google", "", "Paid Shopping"),
    // E-mail and social utm_medium beat the referrer.
    ("?utm_source=newsletter&utm_medium=email", "https://some-blog.net/", "email", "", "some-blog.net", "Email"),
    ("?utm_source=newsletter&utm_medium=email", "-", "email", "", "", "Email"),
    ("?utm_source=newsletter&utm_medium=email", "https://mail.google.com/", "email", "gmail", "mail.google.com", "Email"),
    ("?utm_medium=e-mail", "-", "email", "", "", "Email"),
    ("?utm_source=linkedin&utm_medium=social", "-", "social", "linkedin", "", "Organic Social"),
    ("?utm_source=fb&utm_medium=social", "https://blog.example.org/", "social", "facebook", "blog.example.org", "Organic Social"),
    ("?utm_source=mastodon&utm_medium=sm", "-", "social", "mastodon", "", "Organic Social"),
    // Other tags: the type stays what the referrer says, the channel follows the tags.
    ("?utm_source=sms&utm_medium=sms", "-", "direct", "", "", "SMS"),
    ("?utm_source=firebase&utm_medium=push", "-", "direct", "", "", "Mobile Push Notifications"),
    ("?utm_source=spotify&utm_medium=audio", "-", "direct", "", "", "Audio"),
    ("?utm_source=partner&utm_medium=affiliate", "https://deals.partner.net/", "link", "", "deals.partner.net", "Affiliates"),
    ("?utm_source=newsletter", "-", "direct", "", "", "Unassigned"),
    ("?utm_campaign=spring", "-", "direct", "", "", "Direct"),
    ("?utm_source=google&utm_medium=organic", "-", "search", "google", "", "Organic Search"),
    ("?utm_source=blog&utm_medium=referral", "https://blog.partner.com/", "link", "", "blog.partner.com", "Referral"),
    ("?utm_source=google&utm_medium=referral", "https://www.google.com/", "search", "google", "www.google.com", "Organic Search"),
    // Internal navigation, own domains, referral exclusions.
    ("https://www.example.com/b", "https://www.example.com/a", "internal", "", "www.example.com", "Direct"),
    ("https://example.com/b", "https://www.example.com/a", "internal", "", "www.example.com", "Direct"),
    ("https://www.example.com/b", "https://shop.example.com/", "internal", "", "shop.example.com", "Direct"),
    ("https://www.example.com/b", "https://app.mybrand.io/", "internal", "", "app.mybrand.io", "Direct"),
    ("https://www.example.com/b", "https://MYBRAND.IO/", "internal", "", "mybrand.io", "Direct"),
    ("https://www.example.com/b", "https://www.paypal.com/checkout", "internal", "", "www.paypal.com", "Direct"),
    ("https://WWW.EXAMPLE.COM/b", "https://www.example.com:8080/a", "internal", "", "www.example.com", "Direct"),
    ("https://other.org/b", "https://other.org/a", "internal", "", "other.org", "Direct"),
    ("https://other.org/b", "https://www.google.com/", "search", "google", "www.google.com", "Organic Search"),
    ("", "https://notexample.com/", "link", "", "notexample.com", "Referral"),
    ("?utm_source=newsletter&utm_medium=email", "https://www.example.com/", "email", "", "www.example.com", "Email"),
    // Plain links, including hosts under known brands that are not what the brand is known for.
    ("", "https://news.example.org/article", "link", "", "news.example.org", "Referral"),
    ("", "https://docs.google.com/document/d/1", "link", "", "docs.google.com", "Referral"),
    ("", "https://news.google.com/", "link", "", "news.google.com", "Referral"),
    ("", "https://play.google.com/store", "link", "", "play.google.com", "Referral"),
    ("", "https://accounts.google.com/", "link", "", "accounts.google.com", "Referral"),
    ("", "https://www.amazon.de/", "link", "", "www.amazon.de", "Organic Shopping"),
    ("", "https://www.ebay.co.uk/", "link", "", "www.ebay.co.uk", "Organic Shopping"),
    ("", "https://google.evil.com/", "link", "", "google.evil.com", "Referral"),
    ("", "https://notfacebook.com/", "link", "", "notfacebook.com", "Referral"),
    ("", "https://facebook.com.evil.net/", "link", "", "facebook.com.evil.net", "Referral"),
    ("", "www.blog.net/post", "link", "", "www.blog.net", "Referral"),
    ("", "android-app://com.example.someapp", "link", "", "com.example.someapp", "Referral"),
    ("", "https://192.168.0.1:8080/", "link", "", "192.168.0.1", "Referral"),
    ("", "http://localhost:3000/", "link", "", "localhost", "Referral"),
    ("", "https://xn--bcher-kva.example/", "link", "", "xn--bcher-kva.example", "Referral"),
    ("", "https://bücher.example/", "link", "", "xn--bcher-kva.example", "Referral"),
    // No referrer, or one that names no host.
    ("", "-", "direct", "", "", "Direct"),
    ("", "", "direct", "", "", "Direct"),
    ("", "   ", "direct", "", "", "Direct"),
    ("", "null", "direct", "", "", "Direct"),
    ("", "about:blank", "direct", "", "", "Direct"),
    ("", "not a url at all", "direct", "", "", "Direct"),
    ("", "http://", "direct", "", "", "Direct"),
    ("", "javascript:alert(1)", "direct", "", "", "Direct"),
    ("", "%%%", "direct", "", "", "Direct"),
    ("-", "-", "direct", "", "", "Direct"),
    ("not a url", "", "direct", "", "", "Direct"),
];

fn settings() -> AttributionSettings {
    AttributionSettings {
        own_domains: vec!["example.com".into(), "MyBrand.io".into()],
        referral_exclusions: vec!["paypal.com".into()],
        ..AttributionSettings::default()
    }
}

#[test]
fn the_case_table_is_large_enough_to_mean_something() {
    assert!(CASES.len() >= 150, "{} cases", CASES.len());
}

/// The cases that do not classify as expected, one line each.
fn failures(cases: &[Case]) -> Vec<String> {
    let settings = settings();
    let mut failures = Vec::new();
    for &(page, referrer, kind, name, host, channel) in cases {
        let page = match page {
            "" => Some(PAGE.to_owned()),
            "-" => None,
            query if query.starts_with('?') => Some(format!("{PAGE}{query}")),
            url => Some(url.to_owned()),
        };
        let referrer = (referrer != "-").then_some(referrer);
        let t = classify(page.as_deref(), referrer, &settings);
        let got =
            (t.referrer.kind(), t.referrer.name().unwrap_or(""), t.referrer.host().unwrap_or(""), t.channel.as_str());
        if got != (kind, name, host, channel) {
            failures.push(format!("{page:?} ← {referrer:?}: expected {:?}, got {got:?}", (kind, name, host, channel)));
        }
    }
    failures
}

fn assert_cases(cases: &[Case]) {
    let failures = failures(cases);
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn every_case_in_the_table_classifies_as_expected() {
    assert_cases(CASES);
}

#[test]
fn search_engines_of_the_ga4_and_snowplow_lists_are_organic_search() {
    #[rustfmt::skip]
    assert_cases(&[
        ("", "https://yandex.ru/search/?text=x", "search", "yandex", "yandex.ru", "Organic Search"),
        ("", "https://yandex.com.tr/", "search", "yandex", "yandex.com.tr", "Organic Search"),
        ("", "https://www.baidu.com/s?wd=x", "search", "baidu", "www.baidu.com", "Organic Search"),
        ("", "https://search.naver.com/search.naver?query=x", "search", "naver", "search.naver.com", "Organic Search"),
        ("", "https://search.seznam.cz/?q=x", "search", "seznam", "search.seznam.cz", "Organic Search"),
        ("", "https://www.ecosia.org/search?q=x", "search", "ecosia", "www.ecosia.org", "Organic Search"),
        ("", "https://www.qwant.com/?q=x", "search", "qwant", "www.qwant.com", "Organic Search"),
        ("", "https://www.startpage.com/do/search", "search", "startpage", "www.startpage.com", "Organic Search"),
        ("", "https://www.ixquick.com/", "search", "startpage", "www.ixquick.com", "Organic Search"),
        ("", "https://duckduckgo.com/?q=x", "search", "duckduckgo", "duckduckgo.com", "Organic Search"),
        ("", "https://html.duckduckgo.com/html/", "search", "duckduckgo", "html.duckduckgo.com", "Organic Search"),
        ("", "https://search.brave.com/search?q=x", "search", "brave", "search.brave.com", "Organic Search"),
        ("", "https://search.yahoo.co.jp/search?p=x", "search", "yahoo", "search.yahoo.co.jp", "Organic Search"),
        ("", "https://www.yahoo.co.jp/", "search", "yahoo", "www.yahoo.co.jp", "Organic Search"),
        ("", "https://www.sogou.com/web?query=x", "search", "sogou", "www.sogou.com", "Organic Search"),
        ("", "https://www.so.com/s?q=x", "search", "360", "www.so.com", "Organic Search"),
        ("", "https://www.360.cn/", "search", "360", "www.360.cn", "Organic Search"),
        ("", "https://m.sm.cn/s?q=x", "search", "shenma", "m.sm.cn", "Organic Search"),
        ("", "https://search.daum.net/search?q=x", "search", "daum", "search.daum.net", "Organic Search"),
        ("", "https://www.ask.com/web?q=x", "search", "ask", "www.ask.com", "Organic Search"),
        ("", "https://search.aol.com/aol/search?q=x", "search", "aol", "search.aol.com", "Organic Search"),
        ("", "https://www.petalsearch.com/search?query=x", "search", "petal", "www.petalsearch.com", "Organic Search"),
        ("", "https://search.goo.ne.jp/web.jsp?MT=x", "search", "goo", "search.goo.ne.jp", "Organic Search"),
        ("", "https://nova.rambler.ru/search?query=x", "search", "rambler", "nova.rambler.ru", "Organic Search"),
        ("", "https://go.mail.ru/search?q=x", "search", "mail-ru-search", "go.mail.ru", "Organic Search"),
        ("", "https://yep.com/web?q=x", "search", "yep", "yep.com", "Organic Search"),
        ("", "https://coccoc.com/search?query=x", "search", "coccoc", "coccoc.com", "Organic Search"),
    ]);
}

#[test]
fn social_networks_of_the_ga4_and_snowplow_lists_are_organic_social() {
    #[rustfmt::skip]
    assert_cases(&[
        ("", "https://www.reddit.com/r/rust/", "social", "reddit", "www.reddit.com", "Organic Social"),
        ("", "https://www.pinterest.de/", "social", "pinterest", "www.pinterest.de", "Organic Social"),
        ("", "https://staff.tumblr.com/", "social", "tumblr", "staff.tumblr.com", "Organic Social"),
        ("", "https://vk.com/", "social", "vk", "vk.com", "Organic Social"),
        ("", "https://m.vk.ru/", "social", "vk", "m.vk.ru", "Organic Social"),
        ("", "https://ok.ru/", "social", "ok", "ok.ru", "Organic Social"),
        ("", "https://weibo.com/", "social", "weibo", "weibo.com", "Organic Social"),
        ("", "https://m.weibo.cn/", "social", "weibo", "m.weibo.cn", "Organic Social"),
        ("", "https://www.quora.com/", "social", "quora", "www.quora.com", "Organic Social"),
        ("", "https://discord.com/channels/1", "social", "discord", "discord.com", "Organic Social"),
        ("", "https://discordapp.com/", "social", "discord", "discordapp.com", "Organic Social"),
        ("", "https://web.telegram.org/", "social", "telegram", "web.telegram.org", "Organic Social"),
        ("", "https://web.whatsapp.com/", "social", "whatsapp", "web.whatsapp.com", "Organic Social"),
        ("", "https://www.threads.com/", "social", "threads", "www.threads.com", "Organic Social"),
        ("", "https://tieba.baidu.com/", "social", "tieba", "tieba.baidu.com", "Organic Social"),
        ("", "https://www.zhihu.com/", "social", "zhihu", "www.zhihu.com", "Organic Social"),
        ("", "https://www.flickr.com/", "social", "flickr", "www.flickr.com", "Organic Social"),
        ("", "https://www.yelp.com/", "social", "yelp", "www.yelp.com", "Organic Social"),
        ("", "https://www.tripadvisor.co.uk/", "social", "tripadvisor", "www.tripadvisor.co.uk", "Organic Social"),
        ("", "https://fb.watch/x", "social", "facebook", "fb.watch", "Organic Social"),
        ("", "https://instagr.am/p/x", "social", "instagram", "instagr.am", "Organic Social"),
    ]);
}

#[test]
fn video_platforms_are_social_referrers_in_organic_video() {
    #[rustfmt::skip]
    assert_cases(&[
        ("", "https://www.youtube.com/watch?v=x", "social", "youtube", "www.youtube.com", "Organic Video"),
        ("", "https://music.youtube.com/", "social", "youtube", "music.youtube.com", "Organic Video"),
        ("", "https://player.vimeo.com/video/1", "social", "vimeo", "player.vimeo.com", "Organic Video"),
        ("", "https://m.twitch.tv/", "social", "twitch", "m.twitch.tv", "Organic Video"),
        ("", "https://www.dailymotion.com/", "social", "dailymotion", "www.dailymotion.com", "Organic Video"),
        ("", "https://dai.ly/x", "social", "dailymotion", "dai.ly", "Organic Video"),
        ("", "https://www.bilibili.com/", "social", "bilibili", "www.bilibili.com", "Organic Video"),
        ("", "https://b23.tv/x", "social", "bilibili", "b23.tv", "Organic Video"),
        ("", "https://www.netflix.com/", "social", "netflix", "www.netflix.com", "Organic Video"),
        ("", "https://www.ted.com/talks/x", "social", "ted", "www.ted.com", "Organic Video"),
        ("", "https://fast.wistia.net/embed/x", "social", "wistia", "fast.wistia.net", "Organic Video"),
        ("", "https://www.iqiyi.com/", "social", "iqiyi", "www.iqiyi.com", "Organic Video"),
        ("", "https://v.youku.com/", "social", "youku", "v.youku.com", "Organic Video"),
        ("", "https://www.nicovideo.jp/", "social", "niconico", "www.nicovideo.jp", "Organic Video"),
        // TikTok is a social network in GA4's lists, not a video platform.
        ("", "https://www.tiktok.com/@x", "social", "tiktok", "www.tiktok.com", "Organic Social"),
    ]);
}

#[test]
fn marketplaces_are_links_in_organic_shopping() {
    #[rustfmt::skip]
    assert_cases(&[
        ("", "https://www.amazon.com/dp/x", "link", "", "www.amazon.com", "Organic Shopping"),
        ("", "https://www.amazon.co.uk/", "link", "", "www.amazon.co.uk", "Organic Shopping"),
        ("", "https://amzn.to/x", "link", "", "amzn.to", "Organic Shopping"),
        ("", "https://www.ebay.com/itm/1", "link", "", "www.ebay.com", "Organic Shopping"),
        ("", "https://www.etsy.com/listing/1", "link", "", "www.etsy.com", "Organic Shopping"),
        ("", "https://www.walmart.com/", "link", "", "www.walmart.com", "Organic Shopping"),
        ("", "https://www.walmart.ca/", "link", "", "www.walmart.ca", "Organic Shopping"),
        ("", "https://apps.shopify.com/x", "link", "", "apps.shopify.com", "Organic Shopping"),
        ("", "https://shop.app/", "link", "", "shop.app", "Organic Shopping"),
        ("", "https://www.aliexpress.com/", "link", "", "www.aliexpress.com", "Organic Shopping"),
        ("", "https://aliexpress.ru/", "link", "", "aliexpress.ru", "Organic Shopping"),
        ("", "https://www.alibaba.com/", "link", "", "www.alibaba.com", "Organic Shopping"),
        ("", "https://www.mercadolibre.com.mx/", "link", "", "www.mercadolibre.com.mx", "Organic Shopping"),
        ("", "https://www.mercadolivre.com.br/", "link", "", "www.mercadolivre.com.br", "Organic Shopping"),
        ("", "https://www.rakuten.co.jp/", "link", "", "www.rakuten.co.jp", "Organic Shopping"),
        ("", "https://www.idealo.de/preisvergleich/x", "link", "", "www.idealo.de", "Organic Shopping"),
        ("", "https://shopping.yahoo.co.jp/", "link", "", "shopping.yahoo.co.jp", "Organic Shopping"),
        ("", "https://search.shopping.naver.com/", "link", "", "search.shopping.naver.com", "Organic Shopping"),
        ("", "https://www.zalando.de/", "link", "", "www.zalando.de", "Organic Shopping"),
    ]);
}

#[test]
fn webmail_providers_are_email() {
    #[rustfmt::skip]
    assert_cases(&[
        ("", "https://mail.google.com/mail/u/0/", "email", "gmail", "mail.google.com", "Email"),
        ("", "https://outlook.live.com/mail/0/", "email", "outlook", "outlook.live.com", "Email"),
        ("", "https://eur01.safelinks.protection.outlook.com/?url=x", "email", "outlook", "eur01.safelinks.protection.outlook.com", "Email"),
        ("", "https://mail.yahoo.com/", "email", "yahoo-mail", "mail.yahoo.com", "Email"),
        ("", "https://mail.proton.me/", "email", "protonmail", "mail.proton.me", "Email"),
        ("", "https://mail.zoho.eu/", "email", "zoho-mail", "mail.zoho.eu", "Email"),
        ("", "https://www.icloud.com/mail", "email", "icloud", "www.icloud.com", "Email"),
        ("", "https://mail.yandex.com/", "email", "yandex-mail", "mail.yandex.com", "Email"),
        ("", "https://e.mail.ru/inbox/", "email", "mail-ru", "e.mail.ru", "Email"),
        ("", "https://navigator.gmx.net/mail", "email", "gmx", "navigator.gmx.net", "Email"),
        ("", "https://www.gmx.de/", "email", "gmx", "www.gmx.de", "Email"),
        ("", "https://web.de/", "email", "web-de", "web.de", "Email"),
        ("", "https://3c.web.de/mail/client", "email", "web-de", "3c.web.de", "Email"),
        ("", "https://www.mail.com/", "email", "mail-com", "www.mail.com", "Email"),
        ("", "https://email.t-online.de/em", "email", "t-online", "email.t-online.de", "Email"),
        ("", "https://email.seznam.cz/", "email", "seznam-email", "email.seznam.cz", "Email"),
        ("", "https://mail.naver.com/", "email", "naver-mail", "mail.naver.com", "Email"),
        ("", "https://mail.daum.net/", "email", "daum-mail", "mail.daum.net", "Email"),
        ("", "https://wx.mail.qq.com/", "email", "qq-mail", "wx.mail.qq.com", "Email"),
        ("", "https://mail.163.com/", "email", "163-mail", "mail.163.com", "Email"),
        ("", "https://app.fastmail.com/", "email", "fastmail", "app.fastmail.com", "Email"),
        // A name that only looks like a webmail host is not one.
        ("", "https://gmail.com.example.net/", "link", "", "gmail.com.example.net", "Referral"),
    ]);
}

#[test]
fn ad_click_redirectors_are_paid_like_the_platforms_click_ids() {
    #[rustfmt::skip]
    assert_cases(&[
        // Google Ads' redirector: like `gclid`.
        ("", "https://www.googleadservices.com/pagead/aclk?sa=L&ai=x&adurl=", "ad", "google", "www.googleadservices.com", "Paid Search"),
        ("", "https://www.googleadservices.com/", "ad", "google", "www.googleadservices.com", "Paid Search"),
        ("-", "https://www.googleadservices.com/pagead/aclk?sa=L", "ad", "google", "www.googleadservices.com", "Paid Search"),
        // DoubleClick / Google display ads: like `dclid`.
        ("", "https://ad.doubleclick.net/ddm/clk/1;2;3", "ad", "google", "ad.doubleclick.net", "Display"),
        ("", "https://googleads.g.doubleclick.net/pagead/ads?x=1", "ad", "google", "googleads.g.doubleclick.net", "Display"),
        ("", "https://tpc.googlesyndication.com/", "ad", "google", "tpc.googlesyndication.com", "Display"),
        // Microsoft Advertising's redirector: like `msclkid`.
        ("", "https://www.bing.com/aclk?ld=x&u=y", "ad", "microsoft", "www.bing.com", "Paid Search"),
        // Bing's `/ck/a` wraps every result, organic ones too: not paid.
        ("", "https://www.bing.com/ck/a?!&&p=x&u=a1y&ntb=1", "search", "bing", "www.bing.com", "Organic Search"),
        ("", "https://www.bing.com/aclkx", "search", "bing", "www.bing.com", "Organic Search"),
        // Native-ad networks' paid redirectors.
        ("", "https://paid.outbrain.com/network/redir?x", "ad", "outbrain", "paid.outbrain.com", "Paid Other"),
        ("", "https://trc.taboola.com/x/log/3/click", "ad", "taboola", "trc.taboola.com", "Paid Other"),
        // A click id on the landing URL wins over the redirector; tags do not, as with click ids.
        ("?gclid=x", "https://ad.doubleclick.net/", "ad", "google", "ad.doubleclick.net", "Paid Search"),
        ("?utm_source=newsletter&utm_medium=email", "https://www.googleadservices.com/pagead/aclk", "ad", "google", "www.googleadservices.com", "Paid Search"),
        ("?utm_source=google&utm_medium=cpc&utm_campaign=shopping_q4", "https://www.googleadservices.com/pagead/aclk", "ad", "google", "www.googleadservices.com", "Paid Shopping"),
        // Look-alikes are plain links.
        ("", "https://googleadservices.com.evil.net/", "link", "", "googleadservices.com.evil.net", "Referral"),
        ("", "https://notdoubleclick.net/", "link", "", "notdoubleclick.net", "Referral"),
    ]);
}

#[test]
fn social_link_wrappers_are_organic_social_not_paid() {
    #[rustfmt::skip]
    assert_cases(&[
        ("", "https://l.facebook.com/l.php?u=https%3A%2F%2Fwww.example.com%2F&h=x", "social", "facebook", "l.facebook.com", "Organic Social"),
        ("", "https://lm.facebook.com/l.php?u=x", "social", "facebook", "lm.facebook.com", "Organic Social"),
        ("?fbclid=x", "https://l.facebook.com/l.php?u=x", "social", "facebook", "l.facebook.com", "Organic Social"),
        ("", "https://l.instagram.com/?u=x", "social", "instagram", "l.instagram.com", "Organic Social"),
        ("", "https://t.co/AbC123", "social", "x", "t.co", "Organic Social"),
        ("", "https://lnkd.in/dXyZ", "social", "linkedin", "lnkd.in", "Organic Social"),
        ("", "https://www.linkedin.com/safety/go?url=x", "social", "linkedin", "www.linkedin.com", "Organic Social"),
        ("", "https://out.reddit.com/t3_x?url=y", "social", "reddit", "out.reddit.com", "Organic Social"),
        ("", "https://t.umblr.com/redirect?z=x", "social", "tumblr", "t.umblr.com", "Organic Social"),
        ("", "https://away.vk.com/away.php?to=x", "social", "vk", "away.vk.com", "Organic Social"),
        ("", "https://t.cn/x", "social", "weibo", "t.cn", "Organic Social"),
    ]);
}

#[test]
fn webmail_redirectors_of_gmx_and_web_de_are_email() {
    #[rustfmt::skip]
    assert_cases(&[
        ("", "https://deref-gmx.net/mail/client/x/dereferrer/?redirectUrl=y", "email", "gmx", "deref-gmx.net", "Email"),
        ("", "https://deref-gmx.com/mail/client/x/dereferrer/", "email", "gmx", "deref-gmx.com", "Email"),
        ("", "https://deref-web.de/mail/client/x/dereferrer/", "email", "web-de", "deref-web.de", "Email"),
        ("", "https://deref-web-02.de/mail/client/x/dereferrer/", "email", "web-de", "deref-web-02.de", "Email"),
        ("", "https://deref-1und1.de/mail/client/x/dereferrer/", "email", "1und1", "deref-1und1.de", "Email"),
        ("", "https://deref-mail.com/mail/client/x/dereferrer/", "email", "mail-com", "deref-mail.com", "Email"),
        ("", "https://notderef-gmx.net/", "link", "", "notderef-gmx.net", "Referral"),
    ]);
}

#[test]
fn sibling_subdomains_of_the_pages_registrable_domain_are_internal() {
    #[rustfmt::skip]
    assert_cases(&[
        ("https://www.acme.co.uk/a", "https://shop.acme.co.uk/", "internal", "", "shop.acme.co.uk", "Direct"),
        ("https://www.acme.co.uk/a", "https://acme.co.uk/", "internal", "", "acme.co.uk", "Direct"),
        ("https://shop.acme.co.uk/a", "https://blog.eu.acme.co.uk/", "internal", "", "blog.eu.acme.co.uk", "Direct"),
        ("https://app.other.org/a", "https://other.org/", "internal", "", "other.org", "Direct"),
        ("https://docs.other.dev/a", "https://www.other.dev/", "internal", "", "www.other.dev", "Direct"),
        // Another registrable domain, even with the same brand label, is not the same site.
        ("https://www.acme.co.uk/a", "https://www.acme.com/", "link", "", "www.acme.com", "Referral"),
        ("https://www.acme.co.uk/a", "https://www.other.co.uk/", "link", "", "www.other.co.uk", "Referral"),
        ("https://www.acme.co.uk/a", "https://co.uk/", "link", "", "co.uk", "Referral"),
        // On shared hosts every subdomain is someone else's site.
        ("https://alice.github.io/a", "https://bob.github.io/", "link", "", "bob.github.io", "Referral"),
        ("https://shop.myshopify.com/a", "https://other.myshopify.com/", "link", "", "other.myshopify.com", "Referral"),
        // IP addresses are hosts, not domains.
        ("http://10.0.0.1/a", "http://192.168.0.1/", "link", "", "192.168.0.1", "Referral"),
    ]);
}

proptest! {
    #[test]
    fn the_classifier_never_panics_on_arbitrary_strings(page in proptest::option::of(".*"), referrer in proptest::option::of(".*")) {
        let t = classify(page.as_deref(), referrer.as_deref(), &settings());
        prop_assert!(!t.referrer.kind().is_empty());
    }

    #[test]
    fn the_classifier_never_panics_on_url_like_strings(
        page in "(https?://)?[a-zA-Z0-9.:-]{0,20}(/[a-z]{0,5})?(\\?([a-z_]{1,10}=[^&#]{0,8}&?){0,4})?",
        referrer in "([a-z-]{1,12}:(//)?)?[a-zA-Z0-9.:%\\[\\]-]{0,30}(/[ -~]{0,10})?",
        domain in "[.*a-zA-Z]{0,8}",
    ) {
        let settings = AttributionSettings { own_domains: vec![domain], ..AttributionSettings::default() };
        let t = classify(Some(&page), Some(&referrer), &settings);
        prop_assert!(!t.channel.as_str().is_empty());
    }
}
