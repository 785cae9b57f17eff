//! Outbound HTTP for inferlets (`wasi:http/outgoing-handler`): the config's allow-list, a
//! launch's narrowing of it, and the per-process caps. The transport (policy check, DNS,
//! address check, connect, TLS, caps on the response) is in [`send`].
//!
//! An allow entry is `[scheme://]host[:port]` (string) or a table
//! `{ host, port, scheme, private }`. `host` is a name (`api.example.com`), a wildcard
//! (`*.example.com`: any subdomain, not the bare domain), `*` (any host) or an IP literal
//! (`127.0.0.1`, `[::1]`). No scheme = http and https; no port = any port. Only entries with
//! `private = true` may reach loopback, private, link-local, CGNAT or other non-public
//! addresses; the check is on the resolved address, and the connection goes to exactly that
//! address (no second lookup).

pub mod send;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

pub use send::HttpHooks;

/// `[http]` in pied.toml.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Destinations inferlets may be granted; empty = no outbound HTTP at all.
    pub allow: Vec<AllowEntry>,
    /// Requests one process may send in its life.
    pub max_requests: u64,
    /// Response body bytes one process may receive in its life, all requests together.
    pub max_response_bytes: u64,
    /// Per-request limit on connecting, on waiting for the response head and on each wait
    /// between body bytes; a guest's own request options are clamped to it.
    pub timeout_ms: u64,
    /// Requests of one process in flight at once (until its response body is dropped).
    pub max_concurrent: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allow: Vec::new(),
            max_requests: 256,
            max_response_bytes: 64 << 20,
            timeout_ms: 30_000,
            max_concurrent: 16,
        }
    }
}

/// One `[http] allow` entry as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum AllowEntry {
    /// `[scheme://]host[:port]`
    Short(String),
    Table(AllowTable),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowTable {
    pub host: String,
    pub port: Option<u16>,
    pub scheme: Option<String>,
    /// May resolve to loopback/private/link-local addresses.
    #[serde(default)]
    pub private: bool,
}

impl HttpConfig {
    /// Checks the table; an error names the key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.rules().map_err(|e| ("allow", e))?;
        if self.max_requests == 0 {
            return Err(("max_requests", "must be at least 1".into()));
        }
        if self.max_response_bytes == 0 {
            return Err(("max_response_bytes", "must be at least 1".into()));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 3_600_000 {
            return Err(("timeout_ms", "must be 1 to 3600000 (an hour)".into()));
        }
        if self.max_concurrent == 0 {
            return Err(("max_concurrent", "must be at least 1".into()));
        }
        Ok(())
    }

    fn rules(&self) -> Result<Vec<Rule>, String> {
        self.allow.iter().map(Rule::from_entry).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(s: &str) -> Result<Scheme, String> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Ok(Scheme::Http),
            "https" => Ok(Scheme::Https),
            other => Err(format!("unknown scheme {other:?} (http or https)")),
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A host as an allow entry names it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `*`
    Any,
    /// `*.example.com` (stored as `example.com`): strict subdomains.
    Subdomains(String),
    Name(String),
    Ip(IpAddr),
}

/// A request's destination host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// The host of a URI (`example.com`, `[::1]`, `10.0.0.1`), normalised: lower case, no
    /// trailing dot, IPv6 without brackets.
    pub fn parse(s: &str) -> Option<Host> {
        let s = s.strip_suffix('.').unwrap_or(s);
        let bare = s
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(Host::Ip(ip));
        }
        let name = s.to_ascii_lowercase();
        valid_name(&name).then_some(Host::Name(name))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl HostPattern {
    fn parse(s: &str) -> Result<HostPattern, String> {
        let bad = |why: &str| Err(format!("bad host {s:?}: {why}"));
        if s == "*" {
            return Ok(HostPattern::Any);
        }
        if let Some(rest) = s.strip_prefix("*.") {
            let name = rest.to_ascii_lowercase();
            if !valid_name(&name) || name.parse::<IpAddr>().is_ok() {
                return bad("a wildcard is `*.` followed by a domain name");
            }
            return Ok(HostPattern::Subdomains(name));
        }
        if s.contains('*') {
            return bad("`*` may only be the whole host or its first label (`*.example.com`)");
        }
        match Host::parse(s) {
            Some(Host::Ip(ip)) => Ok(HostPattern::Ip(ip)),
            Some(Host::Name(n)) => Ok(HostPattern::Name(n)),
            None => bad("not a host name or IP address"),
        }
    }

    fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Name(p), Host::Name(h)) => p == h,
            (HostPattern::Subdomains(p), Host::Name(h)) => {
                h.len() > p.len() + 1 && h.ends_with(p.as_str()) && {
                    let cut = h.len() - p.len() - 1;
                    h.as_bytes()[cut] == b'.'
                }
            }
            (HostPattern::Ip(p), Host::Ip(h)) => p == h,
            _ => false,
        }
    }

    /// Whether every host `other` matches is matched by `self`.
    fn covers(&self, other: &HostPattern) -> bool {
        match other {
            HostPattern::Any => *self == HostPattern::Any,
            HostPattern::Subdomains(o) => match self {
                HostPattern::Any => true,
                HostPattern::Subdomains(p) => o == p || self.matches(&Host::Name(o.clone())),
                _ => false,
            },
            HostPattern::Name(n) => self.matches(&Host::Name(n.clone())),
            HostPattern::Ip(ip) => self.matches(&Host::Ip(*ip)),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Subdomains(d) => write!(f, "*.{d}"),
            HostPattern::Name(n) => f.write_str(n),
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            HostPattern::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// One parsed allow entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    scheme: Option<Scheme>,
    host: HostPattern,
    port: Option<u16>,
    private: bool,
}

impl Rule {
    fn from_entry(e: &AllowEntry) -> Result<Rule, String> {
        match e {
            AllowEntry::Short(s) => Rule::parse(s),
            AllowEntry::Table(t) => {
                if t.host.contains('/') || t.host.contains('@') {
                    return Err(format!(
                        "bad host {:?}: a host only (put the scheme and port in `scheme` and `port`)",
                        t.host
                    ));
                }
                let host = if t.host.contains(':') && !t.host.starts_with('[') {
                    // A bare IPv6 literal is fine in a table; anything else with ':' is not.
                    match t.host.parse::<IpAddr>() {
                        Ok(ip) => HostPattern::Ip(ip),
                        Err(_) => {
                            return Err(format!(
                                "bad host {:?}: a host only (put the port in `port`)",
                                t.host
                            ));
                        }
                    }
                } else {
                    HostPattern::parse(&t.host)?
                };
                if t.port == Some(0) {
                    return Err(format!("entry for {:?}: port 0 is not a port", t.host));
                }
                Ok(Rule {
                    scheme: t.scheme.as_deref().map(Scheme::parse).transpose()?,
                    host,
                    port: t.port,
                    private: t.private,
                })
            }
        }
    }

    /// `[scheme://]host[:port]`
    fn parse(s: &str) -> Result<Rule, String> {
        let entry = s.trim();
        let (scheme, rest) = match entry.split_once("://") {
            Some((scheme, rest)) => (
                Some(Scheme::parse(scheme).map_err(|e| format!("{s:?}: {e}"))?),
                rest,
            ),
            None => (None, entry),
        };
        if rest.is_empty() || rest.contains(['/', '@', '?', '#', ' ']) {
            return Err(format!(
                "{s:?} is not [scheme://]host[:port] (no path, user or query)"
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (ip, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: unclosed `[`"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{s:?}: expected `:port` after `]`"))?,
                ),
            };
            (&rest[..ip.len() + 2], port)
        } else {
            match rest.split_once(':') {
                Some((h, p)) if !p.contains(':') => (h, Some(p)),
                Some(_) => {
                    return Err(format!(
                        "{s:?}: write IPv6 addresses in brackets ([::1]:8080)"
                    ));
                }
                None => (rest, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(0) => return Err(format!("{s:?}: port 0 is not a port")),
                Ok(n) => Some(n),
                Err(_) => return Err(format!("{s:?}: bad port {p:?} (1 to 65535)")),
            },
        };
        Ok(Rule {
            scheme,
            host: HostPattern::parse(host)?,
            port,
            private: false,
        })
    }

    fn matches(&self, scheme: Scheme, host: &Host, port: u16) -> bool {
        self.scheme.is_none_or(|s| s == scheme)
            && self.port.is_none_or(|p| p == port)
            && self.host.matches(host)
    }

    /// Whether every destination `other` allows is allowed by `self` (privacy aside).
    fn covers(&self, other: &Rule) -> bool {
        let scheme = match (self.scheme, other.scheme) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        let port = match (self.port, other.port) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        scheme && port && self.host.covers(&other.host)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.scheme {
            write!(f, "{}://", s.as_str())?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if self.private {
            f.write_str(" (private)")?;
        }
        Ok(())
    }
}

fn list(rules: &[Rule]) -> String {
    rules
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one process may reach over HTTP (resolved at launch; never changes while it runs).
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    /// What the launch asked for (each covered by `config`).
    granted: Vec<Rule>,
    /// The config's entries at launch (they decide `private`).
    config: Vec<Rule>,
    pub max_requests: u64,
    pub max_response_bytes: u64,
    pub timeout: Duration,
    pub max_concurrent: u32,
}

impl HttpPolicy {
    /// The policy of a launch that asked for `requested` (`--allow-http`), or why not.
    /// `config` as an entry grants the whole config list.
    pub fn resolve(
        config: &HttpConfig,
        requested: &[String],
    ) -> Result<Option<HttpPolicy>, String> {
        if requested.is_empty() {
            return Ok(None);
        }
        let rules = config.rules()?;
        if rules.is_empty() {
            return Err(
                "outbound HTTP is disabled by the daemon's config ([http] allow is empty)".into(),
            );
        }
        let mut granted = Vec::new();
        for asked in requested {
            if asked.trim() == "config" {
                granted.extend(rules.iter().cloned());
                continue;
            }
            let rule = Rule::parse(asked).map_err(|e| format!("--allow-http {e}"))?;
            if !rules.iter().any(|c| c.covers(&rule)) {
                return Err(format!(
                    "--allow-http {asked:?} is not covered by the daemon's [http] allow list ({}); \
                     a launch may only narrow it (`--allow-http config` grants all of it)",
                    list(&rules)
                ));
            }
            granted.push(rule);
        }
        Ok(Some(HttpPolicy {
            granted,
            config: rules,
            max_requests: config.max_requests,
            max_response_bytes: config.max_response_bytes,
            timeout: Duration::from_millis(config.timeout_ms),
            max_concurrent: config.max_concurrent,
        }))
    }

    /// Whether the process may send to `scheme://host:port`; `Ok(private)` says whether the
    /// destination may be a loopback/private/link-local address.
    pub fn check(&self, scheme: Scheme, host: &Host, port: u16) -> Result<bool, String> {
        if !self.granted.iter().any(|r| r.matches(scheme, host, port)) {
            return Err(format!(
                "not in this process' HTTP grant ({})",
                list(&self.granted)
            ));
        }
        let matching: Vec<&Rule> = self
            .config
            .iter()
            .filter(|r| r.matches(scheme, host, port))
            .collect();
        if matching.is_empty() {
            // A grant is covered by some config entry, so this cannot happen; refuse anyway.
            return Err("not in the daemon's [http] allow list".into());
        }
        Ok(matching.iter().any(|r| r.private))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entries: &[&str]) -> HttpConfig {
        HttpConfig {
            allow: entries
                .iter()
                .map(|s| AllowEntry::Short(s.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn host(s: &str) -> Host {
        Host::parse(s).unwrap()
    }

    #[test]
    fn parses_entries() {
        let r = Rule::parse("https://*.Example.com:8443").unwrap();
        assert_eq!(r.scheme, Some(Scheme::Https));
        assert_eq!(r.host, HostPattern::Subdomains("example.com".into()));
        assert_eq!(r.port, Some(8443));
        let r = Rule::parse("[::1]:80").unwrap();
        assert_eq!(r.host, HostPattern::Ip("::1".parse().unwrap()));
        assert_eq!(r.port, Some(80));
        assert_eq!(Rule::parse("*").unwrap().host, HostPattern::Any);
        for bad in [
            "ftp://a.com",
            "a.com:0",
            "a.com:99999",
            "a.com/path",
            "u@a.com",
            "a*.com",
            "*.",
            "::1",
            "",
            "a..com",
            "[::1",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?} parsed");
        }
        let t: HttpConfig = toml::from_str(
            "allow = [\"a.com\", { host = \"127.0.0.1\", port = 8080, scheme = \"http\", private = true }]\ntimeout_ms = 500",
        )
        .unwrap();
        t.validate().unwrap();
        assert_eq!(
            t.rules().unwrap()[1].to_string(),
            "http://127.0.0.1:8080 (private)"
        );
        let t: HttpConfig = toml::from_str("allow = [{ host = \"x\", port = 0 }]").unwrap();
        assert!(t.validate().unwrap_err().1.contains("port 0"));
        let t: HttpConfig =
            toml::from_str("allow = [{ host = \"x\", scheme = \"gopher\" }]").unwrap();
        assert!(t.validate().unwrap_err().1.contains("unknown scheme"));
    }

    #[test]
    fn matches_hosts() {
        let r = Rule::parse("*.example.com").unwrap();
        assert!(r.matches(Scheme::Https, &host("a.example.com"), 443));
        assert!(r.matches(Scheme::Http, &host("a.b.example.com."), 1));
        assert!(!r.matches(Scheme::Http, &host("example.com"), 80));
        assert!(!r.matches(Scheme::Http, &host("badexample.com"), 80));
        let r = Rule::parse("http://api.x.org:8080").unwrap();
        assert!(r.matches(Scheme::Http, &host("API.x.org"), 8080));
        assert!(!r.matches(Scheme::Https, &host("api.x.org"), 8080));
        assert!(!r.matches(Scheme::Http, &host("api.x.org"), 80));
        let r = Rule::parse("[::1]").unwrap();
        assert!(r.matches(Scheme::Http, &host("[0:0::1]"), 80));
    }

    #[test]
    fn launch_narrows_never_widens() {
        let c = cfg(&["*.example.com", "https://api.other.org", "10.0.0.1:8080"]);
        let ok = |asked: &[&str]| {
            HttpPolicy::resolve(&c, &asked.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert!(ok(&[]).unwrap().is_none());
        assert!(
            ok(&["a.example.com", "https://*.b.example.com:1"])
                .unwrap()
                .is_some()
        );
        assert!(ok(&["https://api.other.org:443"]).unwrap().is_some());
        assert!(ok(&["config"]).unwrap().is_some());
        for wider in [
            "example.com",
            "*",
            "api.other.org",
            "http://api.other.org",
            "10.0.0.1",
            "*.com",
        ] {
            let e = ok(&[wider]).unwrap_err();
            assert!(
                e.contains("not covered") && e.contains(wider),
                "{wider}: {e}"
            );
        }
        let p = ok(&["a.example.com"]).unwrap().unwrap();
        assert_eq!(
            p.check(Scheme::Https, &host("a.example.com"), 443),
            Ok(false)
        );
        assert!(p.check(Scheme::Https, &host("b.example.com"), 443).is_err());
        let e = HttpPolicy::resolve(&HttpConfig::default(), &["x.com".into()]).unwrap_err();
        assert!(e.contains("disabled"));
    }

    #[test]
    fn private_comes_from_the_config_entry() {
        let c = HttpConfig {
            allow: vec![
                AllowEntry::Short("127.0.0.1".into()),
                AllowEntry::Table(AllowTable {
                    host: "localhost".into(),
                    port: Some(8080),
                    scheme: None,
                    private: true,
                }),
            ],
            ..Default::default()
        };
        let p = HttpPolicy::resolve(&c, &["config".into()])
            .unwrap()
            .unwrap();
        assert_eq!(p.check(Scheme::Http, &host("127.0.0.1"), 80), Ok(false));
        assert_eq!(p.check(Scheme::Http, &host("localhost"), 8080), Ok(true));
        assert!(p.check(Scheme::Http, &host("localhost"), 8081).is_err());
    }
}
