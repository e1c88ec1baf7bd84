//! Host allow-lists: which hosts ingest and the Hull client may talk to, and which Hull
//! organizations may register a connector.
//!
//! One list type serves every such setting (`HULL_ORGANIZATIONS`, `HULL_KEY_HOSTS`,
//! `HULL_EXTRACT_HOSTS`). An entry is `host`, `host:port` or `*.domain` (any subdomain of
//! `domain`, not `domain` itself); hosts compare case-insensitively. An entry without a port
//! matches only the default ports (none given, 80 or 443), so a listed host cannot be probed on
//! its other ports.

use crate::config::ConfigError;

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Lower-cased host, or the domain after `*.`.
    host: String,
    /// Whether the entry is `*.host`.
    wildcard: bool,
    /// Required port, if given.
    port: Option<u16>,
}

/// A list of allowed hosts. An *open* list allows every host (local mode only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostAllowList {
    entries: Vec<Entry>,
    open: bool,
}

/// Why an organization (or a host) was refused; the message never echoes a remote answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Not a bare `host` or `host:port`.
    #[error("organization must be a bare host or host:port (no scheme, path, query, fragment or credentials)")]
    Malformed,
    /// Well formed, but not on the allow-list.
    #[error("organization {0} is not allowed (HULL_ORGANIZATIONS)")]
    NotAllowed(String),
}

impl HostAllowList {
    /// A list that allows every host.
    pub fn open() -> HostAllowList {
        HostAllowList {
            entries: vec![],
            open: true,
        }
    }

    /// Parses entries (`host`, `host:port`, `*.domain`); `var` names the setting in errors.
    pub fn parse(var: &'static str, items: &[String]) -> Result<HostAllowList, ConfigError> {
        let mut entries = Vec::with_capacity(items.len());
        for raw in items {
            let item = raw.trim().to_ascii_lowercase();
            let (wildcard, rest) = match item.strip_prefix("*.") {
                Some(rest) => (true, rest.to_string()),
                None => (false, item.clone()),
            };
            let (host, port) = split_authority(&rest).ok_or_else(|| ConfigError {
                var,
                value: raw.clone(),
                reason: "each entry must be host, host:port or *.domain".into(),
            })?;
            entries.push(Entry {
                host,
                wildcard,
                port,
            });
        }
        Ok(HostAllowList {
            entries,
            open: false,
        })
    }

    /// Whether the list has no entry and is not open (it allows nothing).
    pub fn is_empty(&self) -> bool {
        !self.open && self.entries.is_empty()
    }

    /// Whether the list allows every host.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Whether `host` (any case) with `port` (the explicit or scheme default port) is allowed.
    pub fn allows(&self, host: &str, port: Option<u16>) -> bool {
        if self.open {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.entries.iter().any(|e| {
            match (e.port, port) {
                (Some(want), got) if got != Some(want) => return false,
                (None, Some(got)) if got != 80 && got != 443 => return false,
                _ => {}
            }
            if e.wildcard {
                host.len() > e.host.len() + 1 && host.ends_with(&format!(".{}", e.host))
            } else {
                host == e.host
            }
        })
    }

    /// Whether an http(s) URL points at an allowed host. Other schemes and URLs with
    /// credentials are never allowed.
    pub fn allows_url(&self, url: &url::Url) -> bool {
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return false;
        }
        match url.host_str() {
            Some(host) => self.allows(
                host.trim_start_matches('[').trim_end_matches(']'),
                url.port_or_known_default(),
            ),
            None => false,
        }
    }

    /// Checks a Hull organization: it must be a bare `host[:port]` on the list. Returns its
    /// normalised (lower-case) form.
    pub fn check_organization(&self, raw: &str) -> Result<String, HostError> {
        let org = parse_organization(raw)?;
        let (host, port) = split_authority(&org).ok_or(HostError::Malformed)?;
        if self.allows(&host, port) {
            Ok(org)
        } else {
            Err(HostError::NotAllowed(org))
        }
    }

    /// The entries as written (for logs and docs).
    pub fn describe(&self) -> String {
        if self.open {
            return "(any)".into();
        }
        self.entries
            .iter()
            .map(|e| {
                let mut s = if e.wildcard {
                    format!("*.{}", e.host)
                } else {
                    e.host.clone()
                };
                if let Some(p) = e.port {
                    s.push_str(&format!(":{p}"));
                }
                s
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Normalises a Hull organization: a bare host name or IPv4 address with an optional port,
/// nothing else (no scheme, userinfo, path, query, fragment, whitespace).
pub fn parse_organization(raw: &str) -> Result<String, HostError> {
    let org = raw.trim().to_ascii_lowercase();
    if org.is_empty() || org.len() > 260 {
        return Err(HostError::Malformed);
    }
    match split_authority(&org) {
        Some(_) => Ok(org),
        None => Err(HostError::Malformed),
    }
}

/// Splits `host[:port]` where host is a DNS name or IPv4 address: labels of letters, digits
/// and `-`, separated by single dots. `None` for anything else.
fn split_authority(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let port: u16 = p.parse().ok().filter(|p| *p > 0)?;
            (h, Some(port))
        }
        None => (s, None),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !host.split('.').all(label_ok) {
        return None;
    }
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> HostAllowList {
        HostAllowList::parse(
            "TEST",
            &items.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .expect("list")
    }

    #[test]
    fn organizations_must_be_bare_hosts() {
        let cases: &[(&str, Result<&str, HostError>)] = &[
            ("acme.hullapp.io", Ok("acme.hullapp.io")),
            ("ACME.hullapp.io", Ok("acme.hullapp.io")),
            ("127.0.0.1:8091", Ok("127.0.0.1:8091")),
            ("acme.hullapp.io/some/path#", Err(HostError::Malformed)),
            ("acme.hullapp.io?x=1", Err(HostError::Malformed)),
            ("acme.hullapp.io#frag", Err(HostError::Malformed)),
            ("user:pw@acme.hullapp.io", Err(HostError::Malformed)),
            ("https://acme.hullapp.io", Err(HostError::Malformed)),
            ("acme.hullapp.io:0", Err(HostError::Malformed)),
            ("acme.hullapp.io:99999", Err(HostError::Malformed)),
            ("acme..hullapp.io", Err(HostError::Malformed)),
            ("acme hullapp.io", Err(HostError::Malformed)),
            ("[::1]:80", Err(HostError::Malformed)),
            ("", Err(HostError::Malformed)),
            ("-acme.io", Err(HostError::Malformed)),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                parse_organization(raw).as_deref().map_err(Clone::clone),
                expected.clone(),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn matching() {
        let l = list(&["*.hullapp.io", "127.0.0.1:4000", "exact.example.com"]);
        let cases: &[(&str, Option<u16>, bool)] = &[
            ("abc.hullapp.io", Some(443), true),
            ("a.b.hullapp.io", None, true),
            ("hullapp.io", Some(443), false),
            ("hullapp.io.evil.com", Some(443), false),
            ("evilhullapp.io", Some(443), false),
            ("127.0.0.1", Some(4000), true),
            ("127.0.0.1", Some(4001), false),
            ("EXACT.example.com", Some(80), true),
            ("exact.example.com", Some(443), true),
            ("exact.example.com", Some(81), false),
            ("abc.hullapp.io", Some(5432), false),
            ("sub.exact.example.com", Some(80), false),
        ];
        for (host, port, ok) in cases {
            assert_eq!(l.allows(host, *port), *ok, "{host} {port:?}");
        }
        assert!(HostAllowList::open().allows("anything", None));
        assert!(HostAllowList::default().is_empty());
        assert!(!HostAllowList::default().allows("a.b", None));
    }

    #[test]
    fn organizations_are_checked_against_the_list() {
        let l = list(&["*.hullapp.io", "127.0.0.1:4000"]);
        assert_eq!(
            l.check_organization("Acme.hullapp.io").as_deref(),
            Ok("acme.hullapp.io")
        );
        assert_eq!(
            l.check_organization("127.0.0.1:4000").as_deref(),
            Ok("127.0.0.1:4000")
        );
        assert!(matches!(
            l.check_organization("127.0.0.1:4001"),
            Err(HostError::NotAllowed(_))
        ));
        assert!(matches!(
            l.check_organization("evil.com"),
            Err(HostError::NotAllowed(_))
        ));
        assert_eq!(
            l.check_organization("acme.hullapp.io/x#"),
            Err(HostError::Malformed)
        );
    }

    #[test]
    fn urls() {
        let l = list(&["*.hullapp.io", "127.0.0.1:4000"]);
        let ok = |u: &str| l.allows_url(&url::Url::parse(u).expect("url"));
        assert!(ok("https://abc.hullapp.io/key"));
        assert!(ok("http://127.0.0.1:4000/extract.json"));
        assert!(!ok("http://127.0.0.1:4001/x"));
        assert!(!ok("file:///etc/passwd"));
        assert!(!ok("ftp://abc.hullapp.io/x"));
        assert!(!ok("https://user:pw@abc.hullapp.io/x"));
        assert!(!ok("https://evil.com/x"));
    }

    #[test]
    fn bad_entries_name_the_variable() {
        let err = HostAllowList::parse("HULL_ORGANIZATIONS", &["https://x.com/".to_string()])
            .unwrap_err();
        assert_eq!(err.var, "HULL_ORGANIZATIONS");
        assert_eq!(
            list(&["*.hullapp.io", "127.0.0.1:4000"]).describe(),
            "*.hullapp.io,127.0.0.1:4000"
        );
    }
}
