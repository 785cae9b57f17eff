//! Chat: a conversation in the model's own chat template. Each reply is streamed to the user
//! as it is generated (`session.send` of the chat decoder's deltas); with `--no-stream` the
//! last reply is the program's result instead. With `--interactive`, later user messages
//! come from the session (`pie-ctl attach` stdin lines, `pie-ctl signal ID MESSAGE`) until
//! `/quit`.
//!
//! `pie-ctl launch chat.wasm -- --prompt "What is the capital of France?"`

use inferlet::model::Model;
use inferlet::pie::core::session;
use inferlet::sample::Sampler;
use inferlet::{Context, FutureStringExt, Result, chat, runtime};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    prompt: Option<String>,
    system: Option<String>,
    max_tokens: Option<usize>,
    interactive: bool,
    no_stream: bool,
    model: Option<String>,
    _positional: Vec<String>,
}

/// Generates one assistant turn after what `ctx` holds, streaming its text unless `quiet`.
async fn reply(ctx: &mut Context, model: &Model, max_tokens: usize, quiet: bool) -> Result<String> {
    let stops = chat::stop_tokens(model);
    let mut decoder = chat::Decoder::new(model);
    let mut text = String::new();
    {
        let mut generator = ctx
            .generate(Sampler::Argmax)
            .max_tokens(max_tokens)
            .stop(&stops);
        while let Some(step) = generator.next()? {
            let out = step.execute().await?;
            match decoder.feed(&out.tokens)? {
                chat::Event::Delta(piece) => {
                    if !quiet {
                        session::send(&piece);
                    }
                    text.push_str(&piece);
                }
                chat::Event::Done(all) => {
                    text = all;
                    break;
                }
                chat::Event::Idle | chat::Event::Interrupt(_) => {}
            }
        }
    }
    // The stop token is not kept in the context: close the turn as the template does.
    ctx.seal();
    Ok(text)
}

#[inferlet::main]
async fn main(input: Input) -> Result<String> {
    let name = match input.model {
        Some(m) => m,
        None => runtime::models()
            .first()
            .cloned()
            .ok_or("no models are served")?,
    };
    let model = Model::load(&name)?;
    let prompt = input
        .prompt
        .or_else(|| input._positional.first().cloned())
        .ok_or("give --prompt TEXT")?;
    let max_tokens = input.max_tokens.unwrap_or(128);
    let mut ctx = Context::new(&model)?;
    if let Some(system) = &input.system {
        ctx.system(system);
    }
    ctx.user(&prompt).cue();
    let mut last = reply(&mut ctx, &model, max_tokens, input.no_stream).await?;
    while input.interactive {
        if !input.no_stream {
            session::send("\n");
        }
        // On stderr (the process log), so a user or a script can see it waits for input.
        eprintln!("chat: waiting for the next message (/quit ends)");
        let Some(next) = session::receive().wait_async().await else {
            break;
        };
        if next.trim() == "/quit" {
            break;
        }
        ctx.user(&next).cue();
        last = reply(&mut ctx, &model, max_tokens, input.no_stream).await?;
    }
    // Streamed replies were shown as they came: the result is then only a line end.
    if input.no_stream {
        Ok(last)
    } else {
        Ok(String::new())
    }
}
