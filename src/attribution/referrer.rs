/*!
Where one visit came from: the referrer classifier.

A touchpoint is decided from two strings, the landing page's URL and its referrer, plus the
campaign Segment may have parsed into `context.campaign`. The referrer says *who linked*; the
landing URL says what the marketer *tagged* (UTM parameters) and what an ad platform *stamped*
(click ids). When they disagree, the more deliberate signal wins:

1. a paid click id on the landing URL (`gclid`, `msclkid`, `ttclid`, …) → `ad`, that network;
   else a referrer on an ad-click redirector (`www.googleadservices.com/pagead/aclk`,
   `*.doubleclick.net`, `www.bing.com/aclk`) → `ad`, classified as that platform's click id;
2. a paid `utm_medium` (`cpc`, `ppc`, `paid*`, `*cp*`, `display`, `banner`, …) → `ad`, the
   network named by `utm_source` (or by the referrer when there is no `utm_source`);
3. `utm_medium` e-mail → `email`; `utm_medium` social → `social`;
4. with no referrer at all: `fbclid`/`igshid` → `social` (facebook/instagram), and a
   `utm_source` naming a known site (`utm_source=chatgpt.com`, which ChatGPT adds to its links
   while often sending no referrer) → that site's type;
5. otherwise the referrer: app referrers (`android-app://PACKAGE`, `ios-app://ID`), then own
   domains, the page's own host and its sibling subdomains (`shop.example.co.uk` on a
   `www.example.co.uk` page, not under shared hosts such as `github.io`: `internal`), then the
   known-site tables
   ([`super::knowledge`]), then `link`. No referrer, an empty one, or one without a host
   (`null`, `about:blank`, garbage) is `direct`.

Nothing here allocates more than the few strings it returns, and nothing can panic on any input
(a property test feeds it arbitrary strings).
*/

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use url::Url;

use super::AttributionSettings;
use super::channel::{Channel, channel_group};
use super::knowledge::{
    AD_REDIRECTS, APPS, CLICK_IDS, COUNTRY_SECOND_LEVELS, ClickId, DISPLAY_MEDIUMS, EMAIL_NAMES, SEARCH_QUERY_PARAMS,
    SHARED_HOSTING, SITES, SOCIAL_MEDIUMS, SOURCE_ALIASES, Site, SiteKind, is_paid_medium,
};

/// Where a visit came from, serialised as the seed's `referrer` object (`{"type":"search",…}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Referrer {
    /// No referrer (typed URL, bookmark, app that strips it).
    Direct,
    /// A search engine's results page.
    Search {
        /// Canonical engine name: `google`, `bing`, `duckduckgo`, ….
        engine: String,
        /// The search terms, when the referrer URL still shows them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        query: Option<String>,
        /// The referrer's host (or app package).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// A social network or video platform.
    Social {
        /// Canonical network name: `facebook`, `linkedin`, `x`, `youtube`, ….
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
        /// The referrer's host (or app package).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// An e-mail: a webmail referrer or an e-mail `utm_medium`.
    Email {
        /// The mail client when the referrer shows it: `gmail`, `outlook`, `yahoo-mail`, ….
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
        /// The referrer's host (or app package).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// Paid traffic: a click id or a paid `utm_medium`.
    Ad {
        /// The ad platform or `utm_source`: `google`, `microsoft`, `facebook`, ….
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
        /// The referrer's host (or app package).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// An AI assistant.
    Ai {
        /// Canonical assistant name: `chatgpt`, `perplexity`, `claude`, `gemini`, ….
        assistant: String,
        /// The referrer's host (or app package).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// The site itself (same host, an own domain or a referral exclusion).
    Internal {
        /// The referrer's host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// Any other site.
    Link {
        /// The referrer's host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
}

impl Referrer {
    /// The `type` field: `direct`, `search`, `social`, `email`, `ad`, `ai`, `internal` or `link`.
    pub fn kind(&self) -> &'static str {
        match self {
            Referrer::Direct => "direct",
            Referrer::Search { .. } => "search",
            Referrer::Social { .. } => "social",
            Referrer::Email { .. } => "email",
            Referrer::Ad { .. } => "ad",
            Referrer::Ai { .. } => "ai",
            Referrer::Internal { .. } => "internal",
            Referrer::Link { .. } => "link",
        }
    }

    /// The canonical name: the engine, network, client or assistant, when known.
    pub fn name(&self) -> Option<&str> {
        match self {
            Referrer::Search { engine, .. } => Some(engine),
            Referrer::Ai { assistant, .. } => Some(assistant),
            Referrer::Social { network, .. } | Referrer::Ad { network, .. } => network.as_deref(),
            Referrer::Email { client, .. } => client.as_deref(),
            Referrer::Direct | Referrer::Internal { .. } | Referrer::Link { .. } => None,
        }
    }

    /// The referrer's host (or app package), when there was a referrer.
    pub fn host(&self) -> Option<&str> {
        match self {
            Referrer::Direct => None,
            Referrer::Search { host, .. }
            | Referrer::Social { host, .. }
            | Referrer::Email { host, .. }
            | Referrer::Ad { host, .. }
            | Referrer::Ai { host, .. }
            | Referrer::Internal { host }
            | Referrer::Link { host } => host.as_deref(),
        }
    }

    /// Whether this visit says where it came from: not `direct`, not `internal`.
    pub fn is_external(&self) -> bool {
        !matches!(self, Referrer::Direct | Referrer::Internal { .. })
    }
}

/// A click id found on the landing URL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClickIdValue {
    /// The parameter: `gclid`, `msclkid`, `fbclid`, ….
    pub name: String,
    /// Its value.
    pub value: String,
}

/// The campaign a visit was tagged with: UTM parameters (landing URL first, then Segment's
/// `context.campaign`) and the click id.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Campaign {
    /// `utm_source`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `utm_medium`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    /// `utm_campaign` (`context.campaign.name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `utm_term`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    /// `utm_content`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `utm_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The first click id on the landing URL, paid ones first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub click_id: Option<ClickIdValue>,
}

impl Campaign {
    /// True when the visit carried no campaign information at all.
    pub fn is_empty(&self) -> bool {
        self == &Campaign::default()
    }

    /// True when any UTM parameter is set (the click id does not count).
    pub fn has_utm(&self) -> bool {
        self.source.is_some()
            || self.medium.is_some()
            || self.name.is_some()
            || self.term.is_some()
            || self.content.is_some()
            || self.id.is_some()
    }
}

/// One classified visit: where it came from, what it was tagged with, and its channel group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Touchpoint {
    /// Where the visit came from.
    pub referrer: Referrer,
    /// The referrer as given, `None` when there was none.
    pub referrer_url: Option<String>,
    /// The landing page URL as given.
    pub url: Option<String>,
    /// UTM parameters and click id (omitted when empty).
    #[serde(default, skip_serializing_if = "Campaign::is_empty")]
    pub campaign: Campaign,
    /// The GA4-style channel group.
    pub channel: Channel,
}

/// Classifies a visit from its landing URL and referrer (either may be absent).
pub fn classify(page_url: Option<&str>, referrer: Option<&str>, settings: &AttributionSettings) -> Touchpoint {
    classify_with_campaign(page_url, referrer, None, settings)
}

/// [`classify`], falling back to Segment's `context.campaign` object for UTM fields the landing
/// URL does not carry.
pub(crate) fn classify_with_campaign(
    page_url: Option<&str>,
    referrer: Option<&str>,
    context_campaign: Option<&Campaign>,
    settings: &AttributionSettings,
) -> Touchpoint {
    let page_url = page_url.filter(|u| !u.trim().is_empty());
    let referrer_url = referrer.map(str::trim).filter(|r| !r.is_empty());
    let page_host = page_url.and_then(parse_host);
    let (campaign, click) = landing_campaign(page_url, context_campaign);
    let origin = classify_referrer(referrer_url, page_host.as_deref(), settings);
    let (referrer, source) = apply_precedence(origin, &campaign, click);
    let channel =
        channel_group(source.source.as_deref(), source.kind, source.medium.as_deref(), campaign.name.as_deref());
    Touchpoint {
        referrer,
        referrer_url: referrer_url.map(str::to_owned),
        url: page_url.map(str::to_owned),
        campaign,
        channel,
    }
}

/// What the referrer alone says, before the landing URL's tags are considered.
struct Origin {
    /// The referrer's host (or app package), lower-cased.
    host: Option<String>,
    /// Same host, own domain or referral exclusion.
    internal: bool,
    /// The known site it matched: canonical name and kind.
    site: Option<(&'static str, SiteKind)>,
    /// Search terms from the referrer URL.
    query: Option<String>,
    /// The paid click an ad-click redirector referrer stands for.
    ad: Option<&'static ClickId>,
}

impl Origin {
    fn direct() -> Self {
        Origin { host: None, internal: false, site: None, query: None, ad: None }
    }
}

/// The source, its kind and the medium that decide the channel group (GA4's "session source /
/// medium").
struct SourceMedium {
    source: Option<String>,
    kind: Option<SiteKind>,
    medium: Option<String>,
}

fn classify_referrer(referrer: Option<&str>, page_host: Option<&str>, settings: &AttributionSettings) -> Origin {
    let Some(raw) = referrer else { return Origin::direct() };
    let Some(url) = parse_loose(raw) else { return Origin::direct() };
    let Some(host) = url.host_str().map(normalize_host).filter(|h| !h.is_empty()) else {
        return Origin::direct();
    };
    if matches!(url.scheme(), "android-app" | "ios-app") {
        let site = APPS.iter().find(|(package, _, _)| *package == host).map(|&(_, name, kind)| (name, kind));
        return Origin { host: Some(host), internal: false, site, query: None, ad: None };
    }
    let internal = page_host.is_some_and(|p| same_site(p, &host))
        || settings.own_domains.iter().chain(&settings.referral_exclusions).any(|d| domain_matches(&host, d));
    if internal {
        return Origin { host: Some(host), internal: true, site: None, query: None, ad: None };
    }
    let ad = ad_redirect(&host, url.path());
    let site = site_for_host(&host).map(|&(_, name, kind)| (name, kind));
    let query = match site {
        Some((engine, SiteKind::Search)) => search_query(&url, engine),
        _ => None,
    };
    Origin { host: Some(host), internal: false, site, query, ad }
}

/// The paid click an ad-click redirector stands for, when the referrer is one.
fn ad_redirect(host: &str, path: &str) -> Option<&'static ClickId> {
    let split = registrable_split(host);
    AD_REDIRECTS
        .iter()
        .find(|r| {
            pattern_matches(host, split, r.host)
                && (r.path.is_empty()
                    || path.strip_prefix(r.path).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
        })
        .map(|r| &r.click)
}

/// Whether a referrer host is the page's own site: the same host but for `www.`, or another
/// subdomain of the same registrable domain (`shop.example.co.uk` for `www.example.co.uk`) —
/// except under shared hosts (`github.io`), where each subdomain is someone else's site, and
/// for IP addresses.
fn same_site(page: &str, referrer: &str) -> bool {
    if strip_www(page) == strip_www(referrer) {
        return true;
    }
    match (registrable_domain(page), registrable_domain(referrer)) {
        (Some(a), Some(b)) => a == b && !SHARED_HOSTING.contains(&a),
        _ => false,
    }
}

/// The registrable domain of a host (`example.co.uk` for `shop.example.co.uk`), `None` for IP
/// addresses and for a bare public suffix or single label (`co.uk`, `localhost`).
fn registrable_domain(host: &str) -> Option<&str> {
    if host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let (sub, brand) = registrable_split(host);
    if brand == host {
        // `registrable_split` gives the whole host as the brand only for those.
        return None;
    }
    Some(if sub.is_empty() { host } else { &host[sub.len() + 1..] })
}

/// Applies the precedence in the module docs: click id (on the landing URL, else an ad-click
/// redirector referrer) > paid medium > e-mail/social medium > (no referrer: organic click id,
/// known `utm_source`) > referrer.
fn apply_precedence(origin: Origin, campaign: &Campaign, click: Option<&'static ClickId>) -> (Referrer, SourceMedium) {
    let host = origin.host.clone();
    let medium = campaign.medium.as_deref().map(str::to_ascii_lowercase);
    let utm_site = campaign.source.as_deref().and_then(resolve_source);
    let utm_name = || {
        utm_site
            .map(|(n, _)| n.to_owned())
            .or_else(|| campaign.source.as_deref().map(|s| s.trim().to_ascii_lowercase()))
    };
    let origin_name = origin.site.map(|(n, _)| n.to_owned());

    // The channel's source/medium, GA4-style: tags when there are any, else the referrer.
    let tagged = campaign.source.is_some() || campaign.medium.is_some();
    let from_origin = origin_source(&origin);
    let source = if tagged {
        SourceMedium {
            source: campaign.source.clone().or(from_origin.source.clone()),
            kind: if campaign.source.is_some() { utm_site.map(|(_, k)| k) } else { from_origin.kind },
            medium: campaign.medium.clone().or(if campaign.source.is_none() { from_origin.medium } else { None }),
        }
    } else {
        from_origin
    };

    // 1. A paid click id on the landing URL, else an ad-click redirector as the referrer.
    let paid_click = click.filter(|c| c.medium.is_some()).or(origin.ad);
    if let Some(click) = paid_click
        && let Some(click_medium) = click.medium
    {
        let source = SourceMedium {
            source: Some(click.network.to_owned()),
            kind: click.kind,
            medium: Some(click_medium.to_owned()),
        };
        return (Referrer::Ad { network: Some(click.network.to_owned()), host }, source);
    }
    if let Some(medium) = medium.as_deref() {
        // 2. A paid medium.
        if is_paid_medium(medium) || DISPLAY_MEDIUMS.contains(&medium) {
            let network = utm_name().or(origin_name);
            return (Referrer::Ad { network, host }, source);
        }
        // 3. An e-mail or social medium.
        if EMAIL_NAMES.contains(&medium) {
            let client = origin.site.filter(|(_, k)| *k == SiteKind::Email).map(|(n, _)| n.to_owned());
            return (Referrer::Email { client, host }, source);
        }
        if SOCIAL_MEDIUMS.contains(&medium) {
            let network = utm_name().or(origin_name);
            return (Referrer::Social { network, host }, source);
        }
    }
    // 4. No referrer: an organic click id or a utm_source naming a known site.
    if origin.host.is_none() {
        if let Some(click) = click {
            let source = if tagged {
                source
            } else {
                SourceMedium {
                    source: Some(click.network.to_owned()),
                    kind: click.kind,
                    medium: Some("referral".to_owned()),
                }
            };
            return (Referrer::Social { network: Some(click.network.to_owned()), host: None }, source);
        }
        if let Some((name, kind)) = utm_site
            && let Some(referrer) = site_referrer(name, kind, None, None)
        {
            return (referrer, source);
        }
    }
    // 5. The referrer.
    let referrer = if origin.internal {
        Referrer::Internal { host }
    } else if let Some((name, kind)) = origin.site
        && let Some(referrer) = site_referrer(name, kind, origin.query.clone(), host.clone())
    {
        referrer
    } else if host.is_some() {
        Referrer::Link { host }
    } else {
        Referrer::Direct
    };
    (referrer, source)
}

/// The referrer object for a known site, `None` for kinds shown as a plain `link`.
fn site_referrer(name: &str, kind: SiteKind, query: Option<String>, host: Option<String>) -> Option<Referrer> {
    let name = name.to_owned();
    match kind {
        SiteKind::Search => Some(Referrer::Search { engine: name, query, host }),
        SiteKind::Social | SiteKind::Video => Some(Referrer::Social { network: Some(name), host }),
        SiteKind::Email => Some(Referrer::Email { client: Some(name), host }),
        SiteKind::Ai => Some(Referrer::Ai { assistant: name, host }),
        SiteKind::Shopping | SiteKind::Plain => None,
    }
}

/// GA4's source/medium for an untagged visit: `google / organic`, `facebook / referral`,
/// `gmail / email`, `example.com / referral`, and nothing for direct and internal visits.
fn origin_source(origin: &Origin) -> SourceMedium {
    if origin.internal {
        return SourceMedium { source: None, kind: None, medium: None };
    }
    let Some(host) = &origin.host else { return SourceMedium { source: None, kind: None, medium: None } };
    let (source, kind) = match origin.site {
        Some((name, SiteKind::Plain)) => (name.to_owned(), None),
        Some((name, kind)) => (name.to_owned(), Some(kind)),
        None => (host.clone(), None),
    };
    let medium = match kind {
        Some(SiteKind::Search) => "organic",
        Some(SiteKind::Email) => "email",
        _ => "referral",
    };
    SourceMedium { source: Some(source), kind, medium: Some(medium.to_owned()) }
}

/// UTM parameters and the click id from the landing URL, UTM fields falling back to
/// `context.campaign`.
fn landing_campaign(
    page_url: Option<&str>,
    context_campaign: Option<&Campaign>,
) -> (Campaign, Option<&'static ClickId>) {
    let mut campaign = Campaign::default();
    let mut click: Option<(usize, &'static ClickId, String)> = None;
    if let Some(query) = page_url.and_then(query_of) {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            let slot = match key.to_ascii_lowercase().as_str() {
                "utm_source" => &mut campaign.source,
                "utm_medium" => &mut campaign.medium,
                "utm_campaign" => &mut campaign.name,
                "utm_term" => &mut campaign.term,
                "utm_content" => &mut campaign.content,
                "utm_id" => &mut campaign.id,
                other => {
                    if let Some(rank) = CLICK_IDS.iter().position(|c| c.param == other)
                        && click.as_ref().is_none_or(|(best, _, _)| rank < *best)
                    {
                        click = Some((rank, &CLICK_IDS[rank], value.to_owned()));
                    }
                    continue;
                }
            };
            if slot.is_none() {
                *slot = Some(value.to_owned());
            }
        }
    }
    if let Some(context) = context_campaign {
        let fields = [
            (&mut campaign.source, &context.source),
            (&mut campaign.medium, &context.medium),
            (&mut campaign.name, &context.name),
            (&mut campaign.term, &context.term),
            (&mut campaign.content, &context.content),
            (&mut campaign.id, &context.id),
        ];
        for (slot, fallback) in fields {
            if slot.is_none() {
                slot.clone_from(fallback);
            }
        }
    }
    let click = click.map(|(_, c, value)| {
        campaign.click_id = Some(ClickIdValue { name: c.param.to_owned(), value });
        c
    });
    (campaign, click)
}

/// The query string of a URL given as text (between `?` and `#`), even when the URL itself does
/// not parse.
fn query_of(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once('?')?;
    Some(rest.split('#').next().unwrap_or(rest))
}

/// Search terms from a search engine's referrer URL.
fn search_query(url: &Url, engine: &str) -> Option<String> {
    let params = SEARCH_QUERY_PARAMS.iter().find(|(e, _)| *e == engine)?.1;
    params.iter().find_map(|param| {
        url.query_pairs().find(|(k, v)| k == *param && !v.trim().is_empty()).map(|(_, v)| v.trim().to_owned())
    })
}

/// Parses a URL, accepting a bare host (`www.google.com/`) as `http://…`.
fn parse_loose(raw: &str) -> Option<Url> {
    match Url::parse(raw) {
        Ok(url) => Some(url),
        Err(url::ParseError::RelativeUrlWithoutBase) if !raw.contains(char::is_whitespace) && raw.contains('.') => {
            Url::parse(&format!("http://{raw}")).ok()
        }
        Err(_) => None,
    }
}

/// The lower-cased host of a URL given as text.
fn parse_host(url: &str) -> Option<String> {
    parse_loose(url)?.host_str().map(normalize_host).filter(|h| !h.is_empty())
}

/// Lower-cases a host and drops a trailing dot (`WWW.Google.COM.` → `www.google.com`).
fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn strip_www(host: &str) -> &str {
    host.strip_prefix("www.").unwrap_or(host)
}

/// `host` is `domain` or a subdomain of it, case-insensitively (`domain` may start with `.` or `*.`).
fn domain_matches(host: &str, domain: &str) -> bool {
    let domain = domain.trim().trim_start_matches("*.").trim_start_matches('.').trim_end_matches('.');
    if domain.is_empty() || host.len() < domain.len() {
        return false;
    }
    let cut = host.len() - domain.len();
    host.is_char_boundary(cut)
        && host[cut..].eq_ignore_ascii_case(domain)
        && (cut == 0 || host.as_bytes()[cut - 1] == b'.')
}

/// Splits a host into its subdomain labels and its brand label: `www.google.co.in` →
/// (`www`, `google`); `google.de` → (``, `google`); `localhost` → (``, `localhost`).
///
/// The public suffix is the last label, or the last two when the TLD has two letters and the
/// second-level label is a generic one (`co.uk`, `com.br`: see
/// [`COUNTRY_SECOND_LEVELS`](super::knowledge::COUNTRY_SECOND_LEVELS) for why this is enough).
pub(crate) fn registrable_split(host: &str) -> (&str, &str) {
    let mut labels = host.rsplit('.');
    let tld = labels.next().unwrap_or_default();
    let second = labels.next();
    let (brand, suffix_len) = match second {
        None => return ("", host),
        Some(second) if tld.len() == 2 && COUNTRY_SECOND_LEVELS.contains(&second) => match labels.next() {
            Some(brand) => (brand, tld.len() + second.len() + 1),
            None => return ("", host),
        },
        Some(second) => (second, tld.len()),
    };
    // host = [sub "."] brand "." suffix
    let brand_start = host.len() - suffix_len - 1 - brand.len();
    let sub = if brand_start == 0 { "" } else { &host[..brand_start - 1] };
    (sub, brand)
}

/// Whether `host`, split by [`registrable_split`] into `(sub, brand)`, matches a [`SITES`]
/// pattern (see [`super::knowledge`]).
fn pattern_matches(host: &str, (sub, brand): (&str, &str), pattern: &str) -> bool {
    match pattern.strip_suffix(".*") {
        None => domain_matches(host, pattern),
        Some(brand_pattern) => {
            let (want_sub, want_brand) = match brand_pattern.rsplit_once('.') {
                Some((s, b)) => (s, b),
                None => ("", brand_pattern),
            };
            brand == want_brand
                && (want_sub.is_empty()
                    || sub == want_sub
                    || (sub.ends_with(want_sub) && sub.as_bytes().get(sub.len() - want_sub.len() - 1) == Some(&b'.')))
        }
    }
}

/// The first known site a host belongs to.
pub(crate) fn site_for_host(host: &str) -> Option<&'static Site> {
    let split = registrable_split(host);
    SITES.iter().find(|(pattern, _, _)| pattern_matches(host, split, pattern))
}

/// What a `utm_source` names: a canonical name (`google`, `fb` → `facebook`), a host
/// (`chatgpt.com`, `www.google.co.in`), or nothing known.
pub(crate) fn resolve_source(source: &str) -> Option<(&'static str, SiteKind)> {
    let source: Cow<'_, str> = if source.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(source.trim().to_ascii_lowercase())
    } else {
        Cow::Borrowed(source.trim())
    };
    let source = source.as_ref();
    let canonical = SOURCE_ALIASES.iter().find(|(alias, _)| *alias == source).map_or(source, |(_, name)| *name);
    if let Some(&(_, name, kind)) = SITES.iter().find(|(_, name, _)| *name == canonical) {
        return Some((name, kind));
    }
    if source.contains('.') {
        let host = parse_host(source)?;
        return site_for_host(&host).map(|&(_, name, kind)| (name, kind));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrable_split_finds_the_brand_under_country_suffixes() {
        assert_eq!(registrable_split("www.google.co.in"), ("www", "google"));
        assert_eq!(registrable_split("google.de"), ("", "google"));
        assert_eq!(registrable_split("www.google.com.br"), ("www", "google"));
        assert_eq!(registrable_split("uk.mail.yahoo.com"), ("uk.mail", "yahoo"));
        assert_eq!(registrable_split("t.co"), ("", "t"));
        assert_eq!(registrable_split("co.uk"), ("", "co.uk"));
        assert_eq!(registrable_split("localhost"), ("", "localhost"));
    }

    fn pattern_matches(host: &str, pattern: &str) -> bool {
        super::pattern_matches(host, registrable_split(host), pattern)
    }

    #[test]
    fn brand_patterns_match_any_suffix_and_subdomain_patterns_only_that_subdomain() {
        assert!(pattern_matches("www.google.com.br", "google.*"));
        assert!(!pattern_matches("google.evil.com", "google.*"));
        assert!(pattern_matches("mail.yahoo.co.jp", "mail.yahoo.*"));
        assert!(pattern_matches("uk.mail.yahoo.com", "mail.yahoo.*"));
        assert!(!pattern_matches("search.yahoo.com", "mail.yahoo.*"));
        assert!(!pattern_matches("xmail.yahoo.com", "mail.yahoo.*"));
    }

    #[test]
    fn domain_match_requires_a_label_boundary() {
        assert!(domain_matches("m.facebook.com", "facebook.com"));
        assert!(domain_matches("FACEBOOK.com", "facebook.com"));
        assert!(!domain_matches("notfacebook.com", "facebook.com"));
        assert!(domain_matches("shop.example.com", "*.example.com"));
        assert!(!domain_matches("example.com", ""));
    }

    #[test]
    fn utm_sources_resolve_by_name_alias_or_host() {
        assert_eq!(resolve_source("Google"), Some(("google", SiteKind::Search)));
        assert_eq!(resolve_source("fb"), Some(("facebook", SiteKind::Social)));
        assert_eq!(resolve_source("chatgpt.com"), Some(("chatgpt", SiteKind::Ai)));
        assert_eq!(resolve_source("newsletter"), None);
    }

    #[test]
    fn search_query_is_read_from_the_engine_parameter() {
        let s = AttributionSettings::default();
        let t = classify(Some("https://a.example/"), Some("https://www.bing.com/search?q=rust+attribution"), &s);
        assert_eq!(t.referrer.kind(), "search");
        assert!(matches!(&t.referrer, Referrer::Search { query: Some(q), .. } if q == "rust attribution"));
        let t = classify(Some("https://a.example/"), Some("https://search.yahoo.com/search?p=sluice"), &s);
        assert!(matches!(&t.referrer, Referrer::Search { query: Some(q), .. } if q == "sluice"));
        let t = classify(Some("https://a.example/"), Some("https://yandex.ru/search/?text=%D0%BF"), &s);
        assert!(matches!(&t.referrer, Referrer::Search { query: Some(q), .. } if q == "п"));
        let t = classify(Some("https://a.example/"), Some("https://www.baidu.com/s?wd=x"), &s);
        assert!(matches!(&t.referrer, Referrer::Search { query: Some(q), .. } if q == "x"));
        let t = classify(Some("https://a.example/"), Some("https://www.google.com/"), &s);
        assert!(matches!(&t.referrer, Referrer::Search { query: None, .. }));
    }

    #[test]
    fn campaign_reads_landing_utm_then_falls_back_to_context_campaign() {
        let s = AttributionSettings::default();
        // Segment's `context.campaign` {"source": "ctx-source", "name": "ctx-name", "term": "t"}.
        let ctx = Campaign {
            source: Some("ctx-source".into()),
            name: Some("ctx-name".into()),
            term: Some("t".into()),
            ..Campaign::default()
        };
        let t = classify_with_campaign(
            Some("https://a.example/?utm_source=news&UTM_MEDIUM=email&gclid=&msclkid=m1&fbclid=f1"),
            None,
            Some(&ctx),
            &s,
        );
        assert_eq!(t.campaign.source.as_deref(), Some("news"));
        assert_eq!(t.campaign.medium.as_deref(), Some("email"));
        assert_eq!(t.campaign.name.as_deref(), Some("ctx-name"));
        assert_eq!(t.campaign.term.as_deref(), Some("t"));
        assert_eq!(t.campaign.click_id, Some(ClickIdValue { name: "msclkid".into(), value: "m1".into() }));
        assert_eq!(t.referrer, Referrer::Ad { network: Some("microsoft".into()), host: None });
    }

    #[test]
    fn referrer_serialises_as_the_seed_contract() {
        let s = AttributionSettings::default();
        let t = classify(Some("https://www.prezly.com/x"), Some("https://www.google.co.in/"), &s);
        assert_eq!(
            serde_json::to_value(&t.referrer).unwrap(),
            serde_json::json!({"type": "search", "engine": "google", "host": "www.google.co.in"})
        );
        let t = classify(Some("https://www.prezly.com"), None, &s);
        assert_eq!(serde_json::to_value(&t.referrer).unwrap(), serde_json::json!({"type": "direct"}));
        let back: Referrer =
            serde_json::from_value(serde_json::json!({"type": "social", "network": "linkedin"})).unwrap();
        assert_eq!(back, Referrer::Social { network: Some("linkedin".into()), host: None });
    }
}
