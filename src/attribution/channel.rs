/*!
Channel groups in the spirit of GA4's default channel grouping, so that a marketer reading
sluice's numbers next to Google Analytics' sees the same buckets.

Every touchpoint is first reduced to GA4's *source / medium*: the UTM tags when the landing URL
(or `context.campaign`) has any; a paid click id's network and `cpc` (`display` for `dclid`,
`affiliate` for `irclickid`); otherwise what the referrer says (`google / organic`,
`facebook / referral`, `gmail / email`, `example.com / referral`, nothing for direct and
internal visits). The source's *kind* (search engine, social network, video platform,
marketplace, AI assistant, webmail) comes from [`super::knowledge`].

Then the first matching rule wins ("paid" means `utm_medium` matches `*cp*`, `ppc`,
`retargeting`, `paid*`, or `sem`/`ads`/`ad`):

| # | channel                   | rule                                                                 |
|---|---------------------------|----------------------------------------------------------------------|
| 1 | Direct                    | no source and no medium                                              |
| 2 | Cross-network             | campaign name contains `cross-network`                               |
| 3 | Paid Shopping             | (marketplace source or campaign name mentions shop) and paid         |
| 4 | Paid Search               | search-engine source and paid                                        |
| 5 | Paid Social               | social source and paid                                               |
| 6 | Paid Video                | video source and paid                                                |
| 7 | Display                   | medium `display`, `banner`, `expandable`, `interstitial` or `cpm`    |
| 8 | Paid Other                | paid                                                                 |
| 9 | Organic Shopping          | marketplace source or campaign name mentions shop                    |
|10 | Organic Social            | social source, or medium `social`, `sm`, `social-media`, …           |
|11 | Organic Video             | video source, or medium contains `video`                             |
|12 | Organic Search            | search-engine source, or medium `organic`                            |
|13 | AI Assistants             | AI-assistant source (not in GA4: sluice's addition)                  |
|14 | Email                     | webmail source, or source or medium `email`, `e-mail`, `e_mail`, `e mail` |
|15 | Referral                  | medium `referral`, `app` or `link`                                   |
|16 | Affiliates                | medium `affiliate`                                                   |
|17 | Audio                     | medium `audio`                                                       |
|18 | SMS                       | source or medium `sms`                                               |
|19 | Mobile Push Notifications | medium ends with `push`, or contains `mobile` or `notification`, or source `firebase` |
|20 | Unassigned                | anything else (e.g. a `utm_source` with no `utm_medium`)             |

Differences from GA4, on purpose: AI Assistants is a channel of its own; Email comes before
Referral so that `utm_source=newsletter&utm_medium=email` and webmail referrers are Email; the
source lists are sluice's tables, not Google's.
*/

use std::fmt;

use serde::{Deserialize, Serialize};

use super::knowledge::{DISPLAY_MEDIUMS, EMAIL_NAMES, REFERRAL_MEDIUMS, SOCIAL_MEDIUMS, SiteKind, is_paid_medium};

/// A GA4-style default channel group, serialised by its display name (`"Organic Search"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Channel {
    /// No source, no medium.
    Direct,
    /// A campaign spanning networks (Performance Max, Smart Shopping).
    #[serde(rename = "Cross-network")]
    CrossNetwork,
    /// Paid marketplace or shopping-campaign traffic.
    #[serde(rename = "Paid Shopping")]
    PaidShopping,
    /// Paid search-engine traffic.
    #[serde(rename = "Paid Search")]
    PaidSearch,
    /// Paid social-network traffic.
    #[serde(rename = "Paid Social")]
    PaidSocial,
    /// Paid video-platform traffic.
    #[serde(rename = "Paid Video")]
    PaidVideo,
    /// Display advertising.
    Display,
    /// Paid traffic from anywhere else.
    #[serde(rename = "Paid Other")]
    PaidOther,
    /// Unpaid marketplace traffic.
    #[serde(rename = "Organic Shopping")]
    OrganicShopping,
    /// Unpaid social-network traffic.
    #[serde(rename = "Organic Social")]
    OrganicSocial,
    /// Unpaid video-platform traffic.
    #[serde(rename = "Organic Video")]
    OrganicVideo,
    /// Unpaid search-engine traffic.
    #[serde(rename = "Organic Search")]
    OrganicSearch,
    /// Traffic from an AI assistant.
    #[serde(rename = "AI Assistants")]
    AiAssistants,
    /// E-mail.
    Email,
    /// A link on another site.
    Referral,
    /// Affiliate links.
    Affiliates,
    /// Audio ads and podcasts.
    Audio,
    /// Text messages.
    #[serde(rename = "SMS")]
    Sms,
    /// Mobile push notifications.
    #[serde(rename = "Mobile Push Notifications")]
    MobilePushNotifications,
    /// Tagged, but matching no rule.
    Unassigned,
}

impl Channel {
    /// The display name, as serialised: `"Organic Search"`, `"Direct"`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Direct => "Direct",
            Channel::CrossNetwork => "Cross-network",
            Channel::PaidShopping => "Paid Shopping",
            Channel::PaidSearch => "Paid Search",
            Channel::PaidSocial => "Paid Social",
            Channel::PaidVideo => "Paid Video",
            Channel::Display => "Display",
            Channel::PaidOther => "Paid Other",
            Channel::OrganicShopping => "Organic Shopping",
            Channel::OrganicSocial => "Organic Social",
            Channel::OrganicVideo => "Organic Video",
            Channel::OrganicSearch => "Organic Search",
            Channel::AiAssistants => "AI Assistants",
            Channel::Email => "Email",
            Channel::Referral => "Referral",
            Channel::Affiliates => "Affiliates",
            Channel::Audio => "Audio",
            Channel::Sms => "SMS",
            Channel::MobilePushNotifications => "Mobile Push Notifications",
            Channel::Unassigned => "Unassigned",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// GA4's shopping-campaign pattern `^(.*(([^a-df-z]|^)shop|shopping).*)$`: "shop" at the start
/// or after anything but a letter other than `e` ("eshop" yes, "workshop" no).
fn mentions_shop(campaign: &str) -> bool {
    campaign
        .match_indices("shop")
        .any(|(i, _)| campaign[..i].chars().next_back().is_none_or(|c| !(c.is_ascii_lowercase() && c != 'e')))
}

/// The channel group of a source / medium (see the module docs for the rules, in this order).
pub(crate) fn channel_group(
    source: Option<&str>,
    kind: Option<SiteKind>,
    medium: Option<&str>,
    campaign: Option<&str>,
) -> Channel {
    let source = source.map(|s| s.trim().to_ascii_lowercase());
    let medium = medium.map(|m| m.trim().to_ascii_lowercase());
    let campaign = campaign.map(str::to_ascii_lowercase);
    let source = source.as_deref().filter(|s| !s.is_empty());
    let medium = medium.as_deref().filter(|m| !m.is_empty());

    let is = |k: SiteKind| kind == Some(k);
    let medium_is = |list: &[&str]| medium.is_some_and(|m| list.contains(&m));
    let source_is = |list: &[&str]| source.is_some_and(|s| list.contains(&s));
    let paid = medium.is_some_and(is_paid_medium);
    let shop_campaign = campaign.as_deref().is_some_and(mentions_shop);

    if source.is_none() && medium.is_none() {
        Channel::Direct
    } else if campaign.as_deref().is_some_and(|c| c.contains("cross-network")) {
        Channel::CrossNetwork
    } else if (is(SiteKind::Shopping) || shop_campaign) && paid {
        Channel::PaidShopping
    } else if is(SiteKind::Search) && paid {
        Channel::PaidSearch
    } else if is(SiteKind::Social) && paid {
        Channel::PaidSocial
    } else if is(SiteKind::Video) && paid {
        Channel::PaidVideo
    } else if medium_is(DISPLAY_MEDIUMS) {
        Channel::Display
    } else if paid {
        Channel::PaidOther
    } else if is(SiteKind::Shopping) || shop_campaign {
        Channel::OrganicShopping
    } else if is(SiteKind::Social) || medium_is(SOCIAL_MEDIUMS) {
        Channel::OrganicSocial
    } else if is(SiteKind::Video) || medium.is_some_and(|m| m.contains("video")) {
        Channel::OrganicVideo
    } else if is(SiteKind::Search) || medium == Some("organic") {
        Channel::OrganicSearch
    } else if is(SiteKind::Ai) {
        Channel::AiAssistants
    } else if is(SiteKind::Email) || source_is(EMAIL_NAMES) || medium_is(EMAIL_NAMES) {
        Channel::Email
    } else if medium_is(REFERRAL_MEDIUMS) {
        Channel::Referral
    } else if medium == Some("affiliate") {
        Channel::Affiliates
    } else if medium == Some("audio") {
        Channel::Audio
    } else if source == Some("sms") || medium == Some("sms") {
        Channel::Sms
    } else if medium.is_some_and(|m| m.ends_with("push") || m.contains("mobile") || m.contains("notification"))
        || source == Some("firebase")
    {
        Channel::MobilePushNotifications
    } else {
        Channel::Unassigned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shop_pattern_follows_ga4() {
        assert!(mentions_shop("shopping_q4"));
        assert!(mentions_shop("eshop"));
        assert!(mentions_shop("black-friday-shop"));
        assert!(!mentions_shop("workshop"));
    }

    #[test]
    fn channel_rules_apply_in_order() {
        use SiteKind::*;
        let c = |s, k, m, n| channel_group(s, k, m, n);
        assert_eq!(c(None, None, None, Some("spring")), Channel::Direct);
        assert_eq!(c(Some("google"), Some(Search), Some("cpc"), Some("pmax cross-network")), Channel::CrossNetwork);
        assert_eq!(c(Some("google"), Some(Search), Some("cpc"), Some("shopping")), Channel::PaidShopping);
        assert_eq!(c(Some("google"), Some(Search), Some("cpc"), None), Channel::PaidSearch);
        assert_eq!(c(Some("google"), Some(Search), Some("cpm"), None), Channel::PaidSearch);
        assert_eq!(c(Some("facebook"), Some(Social), Some("paid_social"), None), Channel::PaidSocial);
        assert_eq!(c(Some("youtube"), Some(Video), Some("cpv"), None), Channel::PaidVideo);
        assert_eq!(c(Some("dsp"), None, Some("banner"), None), Channel::Display);
        assert_eq!(c(Some("partner"), None, Some("cpa"), None), Channel::PaidOther);
        assert_eq!(c(Some("amazon"), Some(Shopping), Some("referral"), None), Channel::OrganicShopping);
        assert_eq!(c(Some("newsletter"), None, Some("social"), None), Channel::OrganicSocial);
        assert_eq!(c(Some("vimeo"), Some(Video), Some("referral"), None), Channel::OrganicVideo);
        assert_eq!(c(Some("x"), None, Some("organic"), None), Channel::OrganicSearch);
        assert_eq!(c(Some("chatgpt"), Some(Ai), None, None), Channel::AiAssistants);
        assert_eq!(c(Some("newsletter"), None, Some("E-mail"), None), Channel::Email);
        assert_eq!(c(Some("blog.example"), None, Some("referral"), None), Channel::Referral);
        assert_eq!(c(Some("impact"), None, Some("affiliate"), None), Channel::Affiliates);
        assert_eq!(c(Some("spotify"), None, Some("audio"), None), Channel::Audio);
        assert_eq!(c(Some("sms"), None, None, None), Channel::Sms);
        assert_eq!(c(Some("app"), None, Some("web_push"), None), Channel::MobilePushNotifications);
        assert_eq!(c(Some("firebase"), None, None, None), Channel::MobilePushNotifications);
        assert_eq!(c(Some("newsletter"), None, None, None), Channel::Unassigned);
    }

    #[test]
    fn channel_serialises_by_display_name() {
        assert_eq!(serde_json::to_value(Channel::OrganicSearch).unwrap(), serde_json::json!("Organic Search"));
        assert_eq!(serde_json::to_value(Channel::AiAssistants).unwrap(), serde_json::json!("AI Assistants"));
        assert_eq!(Channel::Sms.to_string(), "SMS");
    }
}
