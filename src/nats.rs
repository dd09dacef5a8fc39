/*!
NATS connections, for the JetStream journal and the NATS output: the server URLs as configured,
whose passwords and tokens no message, log line or status page shows, and the credentials they
hold.
*/

use std::fmt;

use async_nats::{ConnectOptions, ServerAddr};

/// NATS server URLs as configured (`[journal] url`, a NATS output's `url`): comma-separated, possibly holding a
/// password, which `Debug` and `Display` never show.
#[derive(Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct NatsUrls(pub String);

impl NatsUrls {
    /// Each URL, trimmed, empty entries left out.
    pub fn each(&self) -> impl Iterator<Item = &str> {
        self.0.split(',').map(str::trim).filter(|url| !url.is_empty())
    }

    /// The passwords the URLs hold, to cut out of messages that may quote them.
    fn passwords(&self) -> Vec<String> {
        let secrets = self.each().filter_map(|url| {
            let url = url::Url::parse(url).ok()?;
            // A lone user name is a token: a secret too.
            url.password().or(Some(url.username()).filter(|token| !token.is_empty())).map(str::to_owned)
        });
        let mut secrets: Vec<String> = secrets
            .flat_map(|secret| {
                let decoded = percent_encoding::percent_decode_str(&secret).decode_utf8_lossy().into_owned();
                [secret, decoded]
            })
            .filter(|secret| !secret.is_empty())
            .collect();
        secrets.sort();
        secrets.dedup();
        secrets
    }

    /// The server addresses, for `ConnectOptions::connect`; the error hides passwords.
    pub fn addrs(&self) -> Result<Vec<ServerAddr>, String> {
        let addrs = self
            .each()
            .map(|url| {
                url.parse::<ServerAddr>().map_err(|e| {
                    self.redact(&format!(
                        "url {} is not a NATS server URL ({e}): write nats://HOST:PORT or tls://HOST:PORT",
                        hide_user_info(url)
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.is_empty() {
            return Err("url is empty: give nats://HOST:PORT (comma-separated for several)".into());
        }
        Ok(addrs)
    }

    /// `options` with the credentials the URLs hold: `user:password@` as a user and password,
    /// a lone `token@` as a token, as NATS' Go client reads them. async-nats reads neither from
    /// a URL (nats-io/nats.rs#1623), so a server asking for them would refuse every connection.
    /// The URLs must agree: a client sends one set of credentials to whichever server it reaches.
    pub fn with_credentials(&self, options: ConnectOptions) -> Result<ConnectOptions, String> {
        let mut found: Option<(String, Option<String>)> = None;
        for url in self.each() {
            let Ok(parsed) = url::Url::parse(url) else { continue };
            let decode = |text: &str| percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned();
            let here = match (parsed.username(), parsed.password()) {
                ("", None) => None,
                (user, password) => Some((decode(user), password.map(decode))),
            };
            match (&found, here) {
                (_, None) => {}
                (None, here) => found = here,
                (Some(known), Some(here)) if *known == here => {}
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "the URLs {self} hold different credentials; give every server the same user and password (or token)"
                    ));
                }
            }
        }
        Ok(match found {
            None => options,
            Some((user, Some(password))) => options.user_and_password(user, password),
            Some((token, None)) => options.token(token),
        })
    }

    /// `text` with every password of these URLs replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for password in self.passwords() {
            let encoded =
                percent_encoding::utf8_percent_encode(&password, percent_encoding::NON_ALPHANUMERIC).to_string();
            text = text.replace(&password, "***").replace(&encoded, "***");
        }
        text
    }
}

impl fmt::Display for NatsUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self
            .each()
            .map(|url| match url::Url::parse(url) {
                Ok(mut parsed) if parsed.password().is_some() => {
                    // Only fails for URLs that cannot have a password, which this one has.
                    let _ = parsed.set_password(Some("***"));
                    parsed.to_string()
                }
                Ok(mut parsed) if !parsed.username().is_empty() => {
                    // A token.
                    let _ = parsed.set_username("***");
                    parsed.to_string()
                }
                _ => hide_user_info(url),
            })
            .collect();
        f.write_str(&shown.join(","))
    }
}

impl fmt::Debug for NatsUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsUrls({self})")
    }
}

/// `url` with whatever stands between its scheme and an `@` hidden: for a URL that does not
/// parse, whose password cannot be told apart from the rest.
fn hide_user_info(url: &str) -> String {
    let start = url.find("://").map_or(0, |at| at + 3);
    match url[start..].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_are_never_shown_even_percent_encoded() {
        let urls = NatsUrls("nats://sluice:p%40ss@a:4222, tls://t0ken@b:4222,nats://c:4222".into());
        assert_eq!(urls.to_string(), "nats://sluice:***@a:4222,tls://***@b:4222,nats://c:4222");
        assert_eq!(format!("{urls:?}"), format!("NatsUrls({urls})"));
        let text = "failed: p@ss, p%40ss and t0ken";
        assert_eq!(urls.redact(text), "failed: ***, *** and ***");
    }

    #[test]
    fn the_urls_credentials_must_agree_and_a_bad_address_is_named_without_its_password() {
        let agreeing = NatsUrls("nats://u:pw@a:4222,nats://u:pw@b:4222,nats://c:4222".into());
        assert!(agreeing.with_credentials(ConnectOptions::new()).is_ok());
        let differing = NatsUrls("nats://u:pw@a:4222,nats://u:other@b:4222".into());
        let refused = differing.with_credentials(ConnectOptions::new()).err().unwrap();
        assert!(refused.contains("different credentials") && !refused.contains("pw"), "{refused}");
        let bad = NatsUrls("nats://u:secret@a:notaport".into());
        let refused = bad.addrs().unwrap_err();
        assert!(!refused.contains("secret") && refused.contains("nats://***@a:notaport"), "{refused}");
        assert_eq!(bad.to_string(), "nats://***@a:notaport");
        assert!(NatsUrls(" , ".into()).addrs().is_err());
    }
}
