//! Fetches a web page over `wasi:http` (the host's allow-list decides where it may go),
//! strips its markup crudely and asks the model for a summary.
//!
//! `pie-ctl launch --allow-http en.wikipedia.org http-summarise.wasm -- --url https://en.wikipedia.org/wiki/Otter`

use inferlet::model::Model;
use inferlet::sample::Sampler;
use inferlet::wstd::http::{Client, Request};
use inferlet::{Context, Result, runtime};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    url: Option<String>,
    max_tokens: Option<usize>,
    max_chars: Option<usize>,
    model: Option<String>,
    _positional: Vec<String>,
}

#[inferlet::main]
async fn main(input: Input) -> Result<String> {
    let url = input
        .url
        .or_else(|| input._positional.first().cloned())
        .ok_or("give --url URL")?;
    let request = Request::get(url.as_str())
        .body(inferlet::wstd::io::empty())
        .map_err(|e| format!("bad URL {url}: {e}"))?;
    let mut response = Client::new()
        .send(request)
        .await
        .map_err(|e| format!("fetching {url}: {e:?}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("fetching {url}: HTTP {status}"));
    }
    let body = response
        .body_mut()
        .bytes()
        .await
        .map_err(|e| format!("reading {url}: {e:?}"))?;
    let text = page_text(&String::from_utf8_lossy(&body));
    let text: String = text.chars().take(input.max_chars.unwrap_or(2000)).collect();
    if text.is_empty() {
        return Err(format!("{url} has no text"));
    }

    let name = match input.model {
        Some(m) => m,
        None => runtime::models()
            .first()
            .cloned()
            .ok_or("no models are served")?,
    };
    let model = Model::load(&name)?;
    let tokenizer = model.tokenizer();
    let mut ctx = Context::new(&model)?;
    ctx.append(&tokenizer.encode(&format!("Summarise: {text}\n\nSummary:")));
    let mut generator = ctx
        .generate(Sampler::Argmax)
        .max_tokens(input.max_tokens.unwrap_or(64));
    let mut ids = Vec::new();
    while let Some(step) = generator.next()? {
        ids.extend(step.execute().await?.tokens);
    }
    Ok(tokenizer.decode(&ids)?.trim().to_string())
}

/// The text of an HTML page, crudely: no scripts, styles or tags, a few entities decoded,
/// whitespace collapsed. Plain text passes through.
fn page_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while i < html.len() {
        let rest = &lower[i..];
        if rest.starts_with("<script") || rest.starts_with("<style") {
            let close = if rest.starts_with("<script") {
                "</script>"
            } else {
                "</style>"
            };
            i = rest.find(close).map_or(html.len(), |e| i + e + close.len());
            out.push(' ');
        } else if rest.starts_with('<') {
            i = rest.find('>').map_or(html.len(), |e| i + e + 1);
            out.push(' ');
        } else {
            let next = rest.find('<').map_or(html.len(), |e| i + e);
            out.push_str(&html[i..next]);
            i = next;
        }
    }
    let out = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}
