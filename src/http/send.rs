//! Sending one guest request: policy check, request caps, DNS with tokio, refusal of
//! non-public addresses, connect to the checked address (never a second lookup), TLS with
//! the webpki roots, HTTP/1.1 with hyper, and a response body that enforces the
//! between-bytes timeout and the process' byte cap. All of it is async on the daemon's
//! runtime: nothing here blocks a thread (tokio resolves names on its blocking pool).

use std::future::{Future, poll_fn};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, TlsAlertReceivedPayload};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::{Host, HttpPolicy, Scheme};
use crate::events::EventLog;

/// Lines about refused requests written to one process' stderr, at most.
const MAX_NOTES: u32 = 64;

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

/// What a process has used of its caps.
struct Usage {
    requests: AtomicU64,
    body_bytes: AtomicU64,
    in_flight: Arc<Semaphore>,
    notes: AtomicU32,
}

/// One process' `wasi:http` hooks: its policy (none = every request denied), what it has
/// used, and its log (refusals are explained on its stderr).
pub struct HttpHooks {
    policy: Option<Arc<HttpPolicy>>,
    usage: Arc<Usage>,
    log: Arc<EventLog>,
}

impl HttpHooks {
    pub fn new(policy: Option<HttpPolicy>, log: Arc<EventLog>) -> HttpHooks {
        let concurrent = policy.as_ref().map_or(1, |p| p.max_concurrent as usize);
        HttpHooks {
            policy: policy.map(Arc::new),
            usage: Arc::new(Usage {
                requests: AtomicU64::new(0),
                body_bytes: AtomicU64::new(0),
                in_flight: Arc::new(Semaphore::new(concurrent)),
                notes: AtomicU32::new(0),
            }),
            log,
        }
    }

    /// Decides whether the request may go out at all; on yes, takes its share of the caps.
    fn admit(&self, req: &http::Request<WasiBody>) -> Result<Admitted, Error> {
        let uri = req.uri();
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => return Err(Error::HttpProtocolError),
        };
        let host = uri
            .host()
            .and_then(Host::parse)
            .ok_or(Error::HttpRequestUriInvalid)?;
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        let target = format!("{} {}://{host}:{port}", req.method(), scheme.as_str());
        let note = |what: String| note(&self.log, &self.usage, &format!("{target} {what}"));
        let Some(policy) = &self.policy else {
            note(
                "denied: this process has no HTTP grant (launch it with --allow-http HOST)".into(),
            );
            return Err(Error::HttpRequestDenied);
        };
        let private_ok = match policy.check(scheme, &host, port) {
            Ok(p) => p,
            Err(why) => {
                note(format!("denied: {why}"));
                return Err(Error::HttpRequestDenied);
            }
        };
        let n = self.usage.requests.fetch_add(1, Ordering::Relaxed);
        if n >= policy.max_requests {
            note(format!(
                "denied: request cap reached ({} requests per process, [http] max_requests)",
                policy.max_requests
            ));
            return Err(Error::HttpRequestDenied);
        }
        let Ok(permit) = self.usage.in_flight.clone().try_acquire_owned() else {
            note(format!(
                "refused: {} requests already in flight ([http] max_concurrent)",
                policy.max_concurrent
            ));
            return Err(Error::ConnectionLimitReached);
        };
        Ok(Admitted {
            scheme,
            host,
            port,
            private_ok,
            _permit: permit,
            policy: policy.clone(),
            usage: self.usage.clone(),
            log: self.log.clone(),
            target,
        })
    }
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        match self.admit(&request) {
            Ok(admitted) => Box::new(admitted.send(request, options)),
            Err(e) => Box::new(async move { Err(e) }),
        }
    }

    fn p2_error_from_tls(&mut self, err: &std::io::Error) -> ErrorCode {
        match err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => {
                ErrorCode::TlsCertificateError
            }
            Some(rustls::Error::AlertReceived(alert)) => {
                ErrorCode::TlsAlertReceived(TlsAlertReceivedPayload {
                    alert_id: Some(u8::from(*alert)),
                    alert_message: Some(format!("{alert:?}")),
                })
            }
            _ => ErrorCode::TlsProtocolError,
        }
    }
}

fn note(log: &EventLog, usage: &Usage, what: &str) {
    let n = usage.notes.fetch_add(1, Ordering::Relaxed);
    if n < MAX_NOTES {
        log.append(proto::EventKind::Stderr(
            format!("pied: http: {what}\n").into_bytes(),
        ));
    } else if n == MAX_NOTES {
        log.append(proto::EventKind::Stderr(
            b"pied: http: further refusals are not logged\n".to_vec(),
        ));
    }
}

/// A request that passed the policy and the caps.
struct Admitted {
    scheme: Scheme,
    host: Host,
    port: u16,
    /// May the destination be a non-public address?
    private_ok: bool,
    /// Held until the response body is dropped (or the request fails).
    _permit: OwnedSemaphorePermit,
    policy: Arc<HttpPolicy>,
    usage: Arc<Usage>,
    log: Arc<EventLog>,
    /// `METHOD scheme://host:port`, for notes.
    target: String,
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T> Stream for T where T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

impl Admitted {
    fn note(&self, what: &str) {
        note(&self.log, &self.usage, &format!("{} {what}", self.target));
    }

    async fn send(
        self,
        mut req: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> SendResult {
        let cap = self.policy.timeout;
        let clamp = |asked: Option<Duration>| asked.map_or(cap, |d| d.min(cap));
        let connect_timeout = clamp(options.and_then(|o| o.connect_timeout));
        let first_byte_timeout = clamp(options.and_then(|o| o.first_byte_timeout));
        let between_bytes_timeout =
            clamp(options.and_then(|o| o.between_bytes_timeout)).max(Duration::from_millis(1));

        let stream = tokio::time::timeout(connect_timeout, self.connect())
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
        let stream: Box<dyn Stream> = match self.scheme {
            Scheme::Http => Box::new(stream),
            Scheme::Https => {
                let name = match &self.host {
                    Host::Name(n) => rustls::pki_types::ServerName::try_from(n.clone())
                        .map_err(|_| Error::HttpRequestUriInvalid)?,
                    Host::Ip(ip) => rustls::pki_types::ServerName::from(*ip),
                };
                let tls = tokio::time::timeout(connect_timeout, tls().connect(name, stream))
                    .await
                    .map_err(|_| Error::ConnectionTimeout)?
                    .map_err(|e| {
                        self.note(&format!("TLS failed: {e}"));
                        Error::Tls(e)
                    })?;
                Box::new(tls)
            }
        };
        let (mut sender, conn) = tokio::time::timeout(
            connect_timeout,
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)??;

        // Origin form on the wire (the absolute form is for proxies).
        *req.uri_mut() = http::Uri::builder()
            .path_and_query(
                req.uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/"),
            )
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;

        let send = async {
            tokio::time::timeout(first_byte_timeout, sender.send_request(req))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)?
                .map_err(Error::from)
        };
        // Wait for the response head while driving the connection.
        let mut send = pin!(send);
        let mut conn = Some(conn);
        let res = poll_fn(|cx| match send.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                let Some(c) = conn.as_mut() else {
                    return Poll::Pending;
                };
                let r = ready!(Pin::new(c).poll(cx));
                conn = None;
                match r {
                    Ok(()) => send.as_mut().poll(cx),
                    Err(e) => Poll::Ready(Err(Error::from(e))),
                }
            }
        })
        .await?;

        let max_bytes = self.policy.max_response_bytes;
        let res = res.map(|incoming| {
            CappedBody {
                incoming: Some(incoming),
                between_bytes: between_bytes_timeout,
                timer: Box::pin(tokio::time::sleep(between_bytes_timeout)),
                waiting: false,
                max_bytes,
                admitted: self,
            }
            .boxed_unsync()
        });
        let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async move {
            match conn {
                Some(c) => c.await.map_err(|e| {
                    if e.is_timeout() {
                        Error::HttpResponseTimeout
                    } else {
                        Error::from(e)
                    }
                }),
                None => Ok(()),
            }
        });
        Ok((res, io))
    }

    /// Resolves the host, drops the addresses it may not reach, and connects to the first
    /// of the rest that answers.
    async fn connect(&self) -> Result<TcpStream, Error> {
        let addrs: Vec<SocketAddr> = match &self.host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, self.port)],
            Host::Name(name) => match tokio::net::lookup_host((name.as_str(), self.port)).await {
                Ok(a) => a.collect(),
                Err(e) => {
                    self.note(&format!("cannot resolve {name}: {e}"));
                    return Err(Error::DnsError {
                        rcode: Some(e.to_string()),
                        info_code: None,
                    });
                }
            },
        };
        let mut refused = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match non_public(a.ip()) {
                Some(kind) if !self.private_ok => {
                    refused.get_or_insert((a.ip(), kind));
                    false
                }
                _ => true,
            })
            .collect();
        if allowed.is_empty() {
            return Err(match refused {
                Some((ip, kind)) => {
                    self.note(&format!(
                        "refused: {} is {ip} ({kind}); only an [http] allow entry with \
                         private = true may reach such addresses",
                        self.host
                    ));
                    Error::DestinationIpProhibited
                }
                None => Error::DestinationNotFound,
            });
        }
        let mut last = None;
        for addr in &allowed {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.expect("at least one address was tried");
        Err(match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
            _ => Error::Connect(e),
        })
    }
}

/// The TLS client: webpki roots, ring, HTTP/1.1 only.
fn tls() -> &'static tokio_rustls::TlsConnector {
    static TLS: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();
    TLS.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    })
}

/// A response body that ends with an error on a between-bytes timeout or when the
/// process' response byte cap is passed; it holds the request's concurrency permit.
struct CappedBody {
    incoming: Option<hyper::body::Incoming>,
    between_bytes: Duration,
    /// Runs while the guest waits for a frame (a guest busy elsewhere is not the server
    /// being slow).
    timer: Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
    max_bytes: u64,
    admitted: Admitted,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        let Some(incoming) = this.incoming.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(incoming).poll_frame(cx) {
            Poll::Ready(None) => {
                this.incoming = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.incoming = None;
                Poll::Ready(Some(Err(if e.is_timeout() {
                    Error::HttpResponseTimeout
                } else {
                    Error::from(e)
                })))
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    let before = this
                        .admitted
                        .usage
                        .body_bytes
                        .fetch_add(n, Ordering::Relaxed);
                    if before.saturating_add(n) > this.max_bytes {
                        this.incoming = None;
                        this.admitted.note(&format!(
                            "response cut off: {} response bytes per process ([http] max_response_bytes)",
                            this.max_bytes
                        ));
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                            this.max_bytes,
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let deadline = tokio::time::Instant::now() + this.between_bytes;
                    this.timer.as_mut().reset(deadline);
                }
                ready!(this.timer.as_mut().poll(cx));
                this.incoming = None;
                this.admitted.note(&format!(
                    "response timed out: nothing for {} ms ([http] timeout_ms or the request's between-bytes timeout)",
                    this.between_bytes.as_millis()
                ));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// Why `ip` is not a public unicast address, or `None` when it is.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public_v4(v4).map(|_| "an IPv4-mapped non-public address");
            }
            let s = v6.segments();
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique local (private)")
            } else if s[0] & 0xffc0 == 0xfe80 || s[0] & 0xffc0 == 0xfec0 {
                Some("link-local")
            } else if s[0] & 0xff00 == 0xff00 {
                Some("multicast")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("documentation")
            } else if s[0..6] == [0; 6] {
                // IPv4-compatible (::a.b.c.d), deprecated; judge the embedded address.
                let v4 = Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32);
                non_public_v4(v4).map(|_| "an IPv4-compatible non-public address")
            } else if s[0..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[0] == 0x2002 {
                // NAT64 / 6to4: the IPv4 address inside decides.
                let v4 = if s[0] == 0x2002 {
                    Ipv4Addr::from(((s[1] as u32) << 16) | s[2] as u32)
                } else {
                    Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32)
                };
                non_public_v4(v4).map(|_| "a translated non-public IPv4 address")
            } else {
                None
            }
        }
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if a == 0 {
        Some("unspecified")
    } else if a == 127 {
        Some("loopback")
    } else if a == 10 || (a == 172 && b & 0xf0 == 16) || (a == 192 && b == 168) {
        Some("private")
    } else if a == 169 && b == 254 {
        Some("link-local")
    } else if a == 100 && b & 0xc0 == 64 {
        Some("carrier-grade NAT")
    } else if a == 192 && b == 0 && c == 0 {
        Some("IETF protocol assignments")
    } else if (a == 192 && b == 0 && c == 2)
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
    {
        Some("documentation")
    } else if a == 198 && b & 0xfe == 18 {
        Some("benchmarking")
    } else if a >= 224 {
        Some("multicast or reserved")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::non_public;

    #[test]
    fn classifies_addresses() {
        for private in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
        ] {
            assert!(non_public(private.parse().unwrap()).is_some(), "{private}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
        ] {
            assert!(non_public(public.parse().unwrap()).is_none(), "{public}");
        }
    }
}
