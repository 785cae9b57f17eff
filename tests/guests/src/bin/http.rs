//! Outbound HTTP over wasi:http (for tests/http.rs). One operation per run:
//!   http get URL            GET, prints "status N" and the body
//!   http post URL BODY      POST BODY, same output
//!   http follow URL         GET, following up to 5 redirects (Location), like a browser
//!   http repeat N URL       N GETs; prints "ok K" and the first error
//!   http timeout MS URL     GET with MS as the guest's own between-bytes timeout
//!   http parallel N URL     N GETs started before any answer is read (all kept open);
//!                           prints "ok K" and the first error
//! A failure prints "error: <what>" and exits 1.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

struct Response {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

fn split_url(url: &str) -> (Scheme, String, String) {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", r)) => (Scheme::Http, r),
        Some(("https", r)) => (Scheme::Https, r),
        Some((other, r)) => (Scheme::Other(other.to_string()), r),
        None => (Scheme::Https, url),
    };
    match rest.find('/') {
        Some(i) => (scheme, rest[..i].to_string(), rest[i..].to_string()),
        None => (scheme, rest.to_string(), "/".to_string()),
    }
}

fn request(
    method: Method,
    url: &str,
    body: Option<&[u8]>,
    between_bytes_ms: Option<u64>,
) -> Result<Response, String> {
    let (scheme, authority, path) = split_url(url);
    let headers = Fields::new();
    if let Some(b) = body {
        headers
            .append("content-length", b.len().to_string().as_bytes())
            .map_err(|e| format!("header: {e:?}"))?;
    }
    let req = OutgoingRequest::new(headers);
    req.set_method(&method).unwrap();
    req.set_scheme(Some(&scheme)).unwrap();
    req.set_authority(Some(&authority)).unwrap();
    req.set_path_with_query(Some(&path)).unwrap();
    let out = req.body().unwrap();
    let options = between_bytes_ms.map(|ms| {
        let o = RequestOptions::new();
        o.set_between_bytes_timeout(Some(ms * 1_000_000)).unwrap();
        o.set_first_byte_timeout(Some(ms * 1_000_000)).unwrap();
        o
    });
    let pending = outgoing_handler::handle(req, options).map_err(|e| show(&e))?;
    if let Some(b) = body {
        let stream = out.write().unwrap();
        for chunk in b.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("request body: {e:?}"))?;
        }
        drop(stream);
    }
    OutgoingBody::finish(out, None).map_err(|e| show(&e))?;
    let resp = loop {
        match pending.get() {
            Some(r) => break r,
            None => pending.subscribe().block(),
        }
    };
    let resp = resp
        .map_err(|()| "response taken twice".to_string())?
        .map_err(|e| show(&e))?;
    let status = resp.status();
    let location = resp
        .headers()
        .entries()
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("location"))
        .map(|(_, v)| String::from_utf8_lossy(&v).into_owned());
    let incoming = resp.consume().unwrap();
    let stream = incoming.stream().unwrap();
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(match wasip2::http::types::http_error_code(&e) {
                    Some(code) => format!("body: {}", show(&code)),
                    // wasmtime 48 hands body errors over as text only.
                    None => format!(
                        "body: {}",
                        e.to_debug_string().lines().next().unwrap_or_default()
                    ),
                });
            }
        }
    }
    Ok(Response {
        status,
        location,
        body,
    })
}

/// Starts a GET without waiting for its answer.
fn start_get(url: &str) -> Result<FutureIncomingResponse, String> {
    let (scheme, authority, path) = split_url(url);
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&scheme)).unwrap();
    req.set_authority(Some(&authority)).unwrap();
    req.set_path_with_query(Some(&path)).unwrap();
    let out = req.body().unwrap();
    let pending = outgoing_handler::handle(req, None).map_err(|e| show(&e))?;
    OutgoingBody::finish(out, None).map_err(|e| show(&e))?;
    Ok(pending)
}

fn wait(pending: &FutureIncomingResponse) -> Result<IncomingResponse, String> {
    loop {
        match pending.get() {
            Some(r) => {
                return r
                    .map_err(|()| "response taken twice".to_string())?
                    .map_err(|e| show(&e));
            }
            None => pending.subscribe().block(),
        }
    }
}

fn show(e: &ErrorCode) -> String {
    format!("{e:?}").replace("ErrorCode::", "")
}

fn print(r: &Response) {
    println!("status {}", r.status);
    println!("{}", String::from_utf8_lossy(&r.body));
}

fn run(args: &[String]) -> Result<(), String> {
    let arg = |i: usize| args.get(i).cloned().ok_or("missing argument".to_string());
    match arg(0)?.as_str() {
        "get" => print(&request(Method::Get, &arg(1)?, None, None)?),
        "post" => print(&request(
            Method::Post,
            &arg(1)?,
            Some(arg(2)?.as_bytes()),
            None,
        )?),
        "timeout" => {
            let ms = arg(1)?.parse().map_err(|_| "bad ms")?;
            print(&request(Method::Get, &arg(2)?, None, Some(ms))?)
        }
        "follow" => {
            let mut url = arg(1)?;
            for _ in 0..5 {
                let r = request(Method::Get, &url, None, None)?;
                match (r.status, r.location.clone()) {
                    (300..=399, Some(next)) => {
                        println!("redirect {next}");
                        url = next;
                    }
                    _ => {
                        print(&r);
                        return Ok(());
                    }
                }
            }
            return Err("too many redirects".into());
        }
        "repeat" => {
            let n: usize = arg(1)?.parse().map_err(|_| "bad count")?;
            let url = arg(2)?;
            let mut ok = 0;
            let mut first_error = None;
            for _ in 0..n {
                match request(Method::Get, &url, None, None) {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            println!("ok {ok}");
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        "parallel" => {
            let n: usize = arg(1)?.parse().map_err(|_| "bad count")?;
            let url = arg(2)?;
            let pending = (0..n)
                .map(|_| start_get(&url))
                .collect::<Result<Vec<_>, _>>()?;
            let mut open = Vec::new();
            let mut first_error = None;
            for p in &pending {
                match wait(p) {
                    Ok(r) => open.push(r),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            println!("ok {}", open.len());
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        other => return Err(format!("unknown operation {other:?}")),
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        println!("error: {e}");
        std::process::exit(1);
    }
}
