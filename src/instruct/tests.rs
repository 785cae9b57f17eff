//! The instruct pieces on SmolLM2-135M-Instruct's real tokenizer and ChatML template
//! (`$PIE_TEST_MODEL_DIR` or `state/models/smollm2-135m`, made by `scripts/fetch-model`).

use std::path::PathBuf;
use std::sync::Arc;

use engine::{ChatTemplate, Message, Tokenizer};

use super::*;

fn smollm2() -> Instruct {
    let dir = std::env::var_os("PIE_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("state/models/smollm2-135m")
        });
    let tok = Tokenizer::from_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/fetch-model or set PIE_TEST_MODEL_DIR)",
            dir.display()
        )
    });
    let chat = ChatTemplate::from_dir(&dir)
        .unwrap()
        .expect("SmolLM2 has a chat template");
    Instruct {
        tok: Arc::new(tok),
        chat: Arc::new(chat),
    }
}

fn id(i: &Instruct, token: &str) -> u32 {
    i.tok.token_to_id(token).unwrap()
}

#[test]
fn fillers_are_the_templates_own_turns() {
    let i = smollm2();
    let t = i.template();
    assert_eq!(
        t.system_text("Be brief.").unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n"
    );
    assert_eq!(
        t.user_text("Hi!").unwrap(),
        "<|im_start|>user\nHi!<|im_end|>\n"
    );
    assert_eq!(
        t.assistant_text("Hello.").unwrap(),
        "<|im_start|>assistant\nHello.<|im_end|>\n"
    );
    assert_eq!(t.cue_text().unwrap(), "<|im_start|>assistant\n");
    assert_eq!(t.seal_text().unwrap(), "<|im_end|>\n");
    // <|im_end|> first (the template's end of turn), then <|endoftext|>.
    assert_eq!(
        t.stop_tokens().unwrap(),
        vec![id(&i, "<|im_end|>"), id(&i, "<|endoftext|>")]
    );
}

#[test]
fn filled_turns_tokenize_like_the_rendered_conversation() {
    let i = smollm2();
    let t = i.template();
    let mut ids = t.system("You are terse.").unwrap();
    ids.extend(t.user("What is the capital of France?").unwrap());
    ids.extend(t.cue().unwrap());
    let whole = i
        .chat
        .render(
            &[
                Message::new("system", "You are terse."),
                Message::new("user", "What is the capital of France?"),
            ],
            true,
            None,
        )
        .unwrap();
    assert_eq!(ids, i.tok.encode(&whole, false).unwrap());
}

#[test]
fn the_chat_decoder_streams_text_and_ends_at_a_stop_token() {
    let i = smollm2();
    let mut d = i.chat_decoder().unwrap();
    let text = "The capital of France is Paris. ¡Olé! 🎉 ok";
    let ids = i.tok.encode(text, false).unwrap();
    let mut streamed = String::new();
    for &t in &ids {
        match d.feed(&[t]).unwrap() {
            ChatEvent::Delta(s) => streamed.push_str(&s),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(streamed, text);
    let im_start = id(&i, "<|im_start|>");
    assert_eq!(d.feed(&[im_start]).unwrap(), ChatEvent::Interrupt(im_start));
    let end = id(&i, "<|im_end|>");
    assert_eq!(d.feed(&[end]).unwrap(), ChatEvent::Done(text.to_string()));
    // The decoder starts over for the next turn, with what followed the stop token.
    let next = i.tok.encode(" again", false).unwrap();
    let mut batch = i.tok.encode("Yes", false).unwrap();
    batch.push(end);
    batch.extend(&next);
    assert_eq!(d.feed(&batch).unwrap(), ChatEvent::Done("Yes".into()));
    assert_eq!(d.feed(&[]).unwrap(), ChatEvent::Delta(" again".into()));
}

#[test]
fn the_reasoning_decoder_finds_a_thinking_block() {
    let i = smollm2();
    // SmolLM2 has no thinking markers: never a block.
    let mut plain = i.reasoning_decoder();
    let ids = i.tok.encode("<think>not a block</think>", false).unwrap();
    assert_eq!(
        plain.feed(&ids).unwrap(),
        ReasoningEvent::Delta(String::new())
    );

    // Matched in text, so a tokenizer that splits the markers works too.
    let mut d = ReasoningDecoder::new(i.tok.clone(), "<|im_start|>assistant\n", true);
    let ids = i
        .tok
        .encode("Hmm <think>Paris is in France.</think>Paris.", false)
        .unwrap();
    let mut events = Vec::new();
    for &t in &ids {
        events.push(d.feed(&[t]).unwrap());
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == ReasoningEvent::Start)
            .count(),
        1
    );
    let streamed: String = events
        .iter()
        .filter_map(|e| match e {
            ReasoningEvent::Delta(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(streamed, "Paris is in France.");
    assert!(events.contains(&ReasoningEvent::Complete("Paris is in France.".into())));

    // A cue that opens the block starts inside it.
    let mut open = ReasoningDecoder::new(i.tok.clone(), "<|assistant|><think>\n", true);
    let ids = i.tok.encode("quick thought</think>answer", false).unwrap();
    assert_eq!(
        open.feed(&ids).unwrap(),
        ReasoningEvent::Complete("quick thought".into())
    );
}

const WEATHER: &str = r#"{"name":"get_weather","description":"Current weather of a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}"#;

#[test]
fn equip_writes_a_tool_block_and_answer_a_tool_response() {
    let i = smollm2();
    let t = i.template();
    let text = t
        .equip_text(&tools::parse_tools(&[WEATHER.to_string()]).unwrap())
        .unwrap();
    assert!(text.starts_with("<|im_start|>system\n"), "{text}");
    assert!(
        text.contains("<tools>") && text.contains("\"get_weather\""),
        "{text}"
    );
    assert!(text.ends_with("</tool_call><|im_end|>\n"), "{text}");
    let answer = t.answer_text("get_weather", "{\"temp\": 21}").unwrap();
    assert!(
        answer.starts_with("<|im_start|>user\n<tool_response>\n"),
        "{answer}"
    );
    assert!(answer.contains("\"name\":\"get_weather\""), "{answer}");
    // Bad schemas are refused with the reason.
    let e = t.equip(&["{\"description\": 1}".to_string()]).unwrap_err();
    assert!(e.contains("no \"name\""), "{e}");
    assert!(t.equip(&["not json".to_string()]).is_err());
}

#[test]
fn a_template_that_renders_tools_gives_its_own_block() {
    let tok = smollm2().tok;
    let chat = ChatTemplate::new(
        "{% if tools %}<|im_start|>system\nTOOLS {{ tools | tojson }}<|im_end|>\n{% endif %}\
         {% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
         {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "",
        "",
    )
    .unwrap();
    let t = Template::new(&tok, &chat);
    let text = t
        .equip_text(&tools::parse_tools(&[WEATHER.to_string()]).unwrap())
        .unwrap();
    assert!(text.starts_with("<|im_start|>system\nTOOLS [{"), "{text}");
    assert!(text.ends_with("<|im_end|>\n"), "{text}");
    assert!(!text.contains("<tool_call>"), "{text}");
    // And results go in the template's tool role.
    let answer = t.answer_text("get_weather", "sunny").unwrap();
    assert_eq!(answer, "<|im_start|>tool\nsunny<|im_end|>\n");
}

#[test]
fn the_tool_decoder_reports_complete_calls() {
    let i = smollm2();
    let mut d = i.tool_decoder();
    let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    let ids = i.tok.encode(text, false).unwrap();
    let mut calls = Vec::new();
    for &t in &ids {
        match d.feed(&[t]).unwrap() {
            ToolEvent::Start => {}
            ToolEvent::Call(n, a) => calls.push((n, a)),
        }
    }
    assert_eq!(
        calls,
        vec![(
            "get_weather".to_string(),
            "{\"city\":\"Paris\"}".to_string()
        )]
    );

    // A bare JSON call at the start of a turn (Llama 3.1 style).
    d.reset();
    let ids = i
        .tok
        .encode(" {\"name\": \"f\", \"parameters\": {\"x\": 1}} done", false)
        .unwrap();
    let last = ids
        .iter()
        .map(|&t| d.feed(&[t]).unwrap())
        .find(|e| matches!(e, ToolEvent::Call(..)));
    assert_eq!(last, Some(ToolEvent::Call("f".into(), "{\"x\":1}".into())));

    // Malformed JSON inside the tags is an error, not a silent miss.
    d.reset();
    let ids = i
        .tok
        .encode("ok <tool_call>{\"name\": oops}</tool_call>", false)
        .unwrap();
    assert!(d.feed(&ids).unwrap_err().contains("not valid JSON"));
}

#[test]
fn the_call_grammar_names_each_tool() {
    let g = tools::call_grammar(&[WEATHER.to_string()]).unwrap();
    assert!(g.starts_with("start: \"<tool_call>\\n\" call"), "{g}");
    assert!(g.contains("\"const\":\"get_weather\""), "{g}");
    assert!(tools::call_grammar(&[]).is_err());
}

#[test]
fn the_call_grammar_accepts_exactly_well_formed_calls() {
    let i = smollm2();
    let g = grammar::Grammar::ebnf(&tools::call_grammar(&[WEATHER.to_string()]).unwrap()).unwrap();
    let end = id(&i, "<|im_end|>");
    let env = grammar::TokEnv::from_tokenizer(i.tok.inner().clone(), &[end], None).unwrap();
    let good = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    let mut m = grammar::Matcher::new(&env, &g).unwrap();
    m.accept_tokens(&i.tok.encode(good, false).unwrap())
        .unwrap();
    assert!(m.is_accepting());
    // Arguments beyond the schema's are refused.
    let extra =
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"x\"";
    let mut m = grammar::Matcher::new(&env, &g).unwrap();
    assert!(
        m.accept_tokens(&i.tok.encode(extra, false).unwrap())
            .is_err()
    );
    let bad = "<tool_call>\n{\"name\": \"get_time\"";
    let mut m = grammar::Matcher::new(&env, &g).unwrap();
    assert!(m.accept_tokens(&i.tok.encode(bad, false).unwrap()).is_err());
}
