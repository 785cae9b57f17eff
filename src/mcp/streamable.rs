//! Streamable-HTTP servers (`[[mcp]] url = "http://…"`): rmcp's streamable-HTTP client
//! transport over our own [`StreamableHttpClient`], a plain hyper HTTP/1.1 client (one TCP
//! connection per request, no TLS: the hyper stack pied already carries for `wasi:http`,
//! instead of reqwest and its dependencies).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use rmcp::ServiceExt;
use rmcp::model::{ClientConfig, ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
    StreamableHttpPostResponse,
};
use sse_stream::{Sse, SseStream};

const SESSION_ID: &str = "Mcp-Session-Id";
const LAST_EVENT_ID: &str = "Last-Event-Id";
const EVENT_STREAM: &str = "text/event-stream";
const JSON: &str = "application/json";
/// Largest JSON response (or error body) read.
const MAX_BODY: usize = 16 << 20;

pub async fn connect(
    info: ClientConfig,
    url: &str,
) -> anyhow::Result<RunningService<RoleClient, ClientConfig>> {
    let client = HyperClient::new(url)?;
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_string());
    let transport = StreamableHttpClientTransport::with_client(client, config);
    Ok(info.serve(transport).await?)
}

#[derive(Debug)]
pub struct HttpError(String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

type Error = StreamableHttpError<HttpError>;

fn client_err(e: impl std::fmt::Display) -> Error {
    StreamableHttpError::Client(HttpError(e.to_string()))
}

#[derive(Clone, Debug)]
pub struct HyperClient {
    /// `host:port` to connect to.
    addr: Arc<str>,
    host: HeaderValue,
}

impl HyperClient {
    fn new(url: &str) -> anyhow::Result<HyperClient> {
        let uri: http::Uri = url.parse()?;
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("{url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host();
        Ok(HyperClient {
            addr: format!("{host}:{port}").into(),
            host: HeaderValue::from_str(authority.as_str())?,
        })
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<http::Response<Incoming>, Error> {
        let stream = tokio::net::TcpStream::connect(&*self.addr)
            .await
            .map_err(|e| client_err(format!("cannot connect to {}: {e}", self.addr)))?;
        let io = wasmtime_wasi_http::io::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(client_err)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("MCP HTTP connection ended: {e}");
            }
        });
        sender.send_request(req).await.map_err(client_err)
    }

    fn request(
        &self,
        method: Method,
        uri: &str,
        session_id: Option<&str>,
        auth: Option<String>,
        custom: HashMap<HeaderName, HeaderValue>,
    ) -> http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::HOST, self.host.clone());
        if let Some(sid) = session_id {
            b = b.header(SESSION_ID, sid);
        }
        if let Some(auth) = auth {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {auth}"));
        }
        for (k, v) in custom {
            b = b.header(k, v);
        }
        b
    }
}

fn content_type(r: &http::Response<Incoming>) -> Option<String> {
    r.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

async fn body(r: http::Response<Incoming>) -> Result<Bytes, Error> {
    Limited::new(r.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(client_err)
}

fn sse(r: http::Response<Incoming>) -> BoxStream<'static, Result<Sse, sse_stream::Error>> {
    SseStream::from_bytes_stream(r.into_body().into_data_stream()).boxed()
}

impl StreamableHttpClient for HyperClient {
    type Error = HttpError;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth: Option<String>,
        custom: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, Error> {
        let json = serde_json::to_vec(&message)?;
        let req = self
            .request(Method::POST, &uri, session_id.as_deref(), auth, custom)
            .header(http::header::CONTENT_TYPE, JSON)
            .header(http::header::ACCEPT, format!("{EVENT_STREAM}, {JSON}"))
            .body(Full::new(Bytes::from(json)))
            .map_err(client_err)?;
        let resp = self.send(req).await?;
        let status = resp.status();
        if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == StatusCode::NOT_FOUND && session_id.is_some() {
            return Err(StreamableHttpError::SessionExpired);
        }
        let new_session = resp
            .headers()
            .get(SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let ct = content_type(&resp);
        let awaits_nothing = !matches!(message, ClientJsonRpcMessage::Request(_));
        if !status.is_success() {
            let text = body(resp).await.unwrap_or_default();
            if let Ok(m @ ServerJsonRpcMessage::Error(_)) = serde_json::from_slice(&text) {
                return Ok(StreamableHttpPostResponse::Json(m, new_session));
            }
            let text = String::from_utf8_lossy(&text[..text.len().min(1024)]).into_owned();
            return Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                format!("HTTP {status}: {text}"),
            )));
        }
        match ct.as_deref() {
            Some(EVENT_STREAM) => Ok(StreamableHttpPostResponse::Sse(sse(resp), new_session)),
            Some(JSON) => {
                let text = body(resp).await?;
                match serde_json::from_slice(&text) {
                    Ok(m) => Ok(StreamableHttpPostResponse::Json(m, new_session)),
                    Err(_) if awaits_nothing => Ok(StreamableHttpPostResponse::Accepted),
                    Err(e) => Err(e.into()),
                }
            }
            _ if awaits_nothing => Ok(StreamableHttpPostResponse::Accepted),
            _ => Err(StreamableHttpError::UnexpectedContentType(ct)),
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth: Option<String>,
        custom: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), Error> {
        let req = self
            .request(Method::DELETE, &uri, Some(&session_id), auth, custom)
            .body(Full::new(Bytes::new()))
            .map_err(client_err)?;
        let resp = self.send(req).await?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED {
            Ok(())
        } else {
            Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                format!("deleting the session: HTTP {status}"),
            )))
        }
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth: Option<String>,
        custom: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, sse_stream::Error>>, Error> {
        let mut b = self
            .request(Method::GET, &uri, session_id.as_deref(), auth, custom)
            .header(http::header::ACCEPT, format!("{EVENT_STREAM}, {JSON}"));
        if let Some(id) = last_event_id {
            b = b.header(LAST_EVENT_ID, id);
        }
        let req = b.body(Full::new(Bytes::new())).map_err(client_err)?;
        let resp = self.send(req).await?;
        let status = resp.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        if status == StatusCode::NOT_FOUND && session_id.is_some() {
            return Err(StreamableHttpError::SessionExpired);
        }
        if !status.is_success() {
            return Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                format!("opening the event stream: HTTP {status}"),
            )));
        }
        match content_type(&resp).as_deref() {
            Some(EVENT_STREAM) => Ok(sse(resp)),
            other => Err(StreamableHttpError::UnexpectedContentType(
                other.map(str::to_string),
            )),
        }
    }
}
