//! The tokenizer environment llguidance needs: every token's bytes (a token trie) and a way to
//! tokenize literal text, built once per model from its `tokenizer.json`.
//!
//! llguidance ships this as `toktrie_hf_tokenizers`, but that crate pins `tokenizers` 0.21
//! while the engine uses 0.22; two copies would double the biggest compile in the workspace.
//! The byte recovery below follows it (MIT, guidance-ai/llguidance): byte-level BPE tokens
//! map their GPT-2 "printable" characters back to bytes; SentencePiece-style byte-fallback
//! tokens are `<0xNN>` or text with `▁` for a space; special tokens become
//! `0xFF <name>`, which toktrie never matches against grammar text.

use crate::cache::GrammarCache;
use crate::error::{Error, Result};
use llguidance::ParserFactory;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use tokenizers::{DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, normalizers};
use toktrie::{TokRxInfo, TokTrie, TokenId, TokenizerEnv};

/// Where [`TokEnv::from_tokenizer_json`] reads the tokenizer from.
pub enum TokenizerSource<'a> {
    /// The contents of a `tokenizer.json`.
    Bytes(&'a [u8]),
    /// The path of a `tokenizer.json`.
    Path(&'a Path),
}

impl<'a> From<&'a [u8]> for TokenizerSource<'a> {
    fn from(b: &'a [u8]) -> Self {
        TokenizerSource::Bytes(b)
    }
}

impl<'a> From<&'a Path> for TokenizerSource<'a> {
    fn from(p: &'a Path) -> Self {
        TokenizerSource::Path(p)
    }
}

/// A model's tokenizer as the grammar compiler sees it. Build one per served model (0.8 s for
/// SmolLM2's 49k vocabulary on a 2-core machine: the tokenizer parse, the token trie and
/// llguidance's token-class slices) and share it: cloning is an `Arc` copy, and it is `Send
/// + Sync`. It also holds the cache of compiled grammars for that model.
#[derive(Clone)]
pub struct TokEnv {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) factory: ParserFactory,
    pub(crate) cache: GrammarCache,
    pub(crate) vocab_size: usize,
    pub(crate) eos: Vec<TokenId>,
}

impl TokEnv {
    /// Builds the environment from a `tokenizer.json` (its bytes or its path). `eos_ids` are the
    /// tokens that end generation (for an instruct model its end-of-turn token and
    /// `<|endoftext|>`); a matcher allows them exactly where the grammar may end. At least one
    /// is required.
    pub fn from_tokenizer_json<'a>(
        source: impl Into<TokenizerSource<'a>>,
        eos_ids: &[u32],
    ) -> Result<TokEnv> {
        let hf = match source.into() {
            TokenizerSource::Bytes(b) => tokenizers::Tokenizer::from_bytes(b)
                .map_err(|e| Error::Tokenizer(format!("tokenizer.json: {e}")))?,
            TokenizerSource::Path(p) => tokenizers::Tokenizer::from_file(p)
                .map_err(|e| Error::Tokenizer(format!("{}: {e}", p.display())))?,
        };
        Self::from_tokenizer(hf, eos_ids, None)
    }

    /// Builds the environment from a loaded tokenizer (for example a clone of
    /// `engine::Tokenizer::inner()`). `vocab_size`, when given, is the width of the model's
    /// logits if it exceeds the tokenizer's vocabulary: the extra ids are never allowed, and
    /// masks have that length.
    pub fn from_tokenizer(
        hf: tokenizers::Tokenizer,
        eos_ids: &[u32],
        vocab_size: Option<usize>,
    ) -> Result<TokEnv> {
        let env = ByteTokenizerEnv::new(hf, eos_ids, vocab_size)?;
        let vocab_size = env.trie.vocab_size();
        let eos = env.trie.eos_tokens().to_vec();
        let tok_env: toktrie::TokEnv = Arc::new(env);
        let mut factory = ParserFactory::new_simple(&tok_env)
            .map_err(|e| Error::Tokenizer(format!("token trie: {e}")))?;
        // llguidance logs warnings to stderr by default; the daemon's stderr is its journal.
        factory.quiet();
        Ok(TokEnv {
            inner: Arc::new(Inner {
                factory,
                cache: GrammarCache::default(),
                vocab_size,
                eos,
            }),
        })
    }

    /// Length of every mask: the vocabulary size (or the `vocab_size` given at construction).
    pub fn vocab_size(&self) -> usize {
        self.inner.vocab_size
    }

    /// Number of compiled grammars cached for this environment.
    pub fn cached_grammars(&self) -> usize {
        self.inner.cache.len()
    }

    /// The end-of-sequence tokens given at construction.
    pub fn eos_ids(&self) -> &[u32] {
        &self.inner.eos
    }

    /// The bytes of token `id` (empty for an unknown id; special tokens are `0xFF` + name).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let trie = self.inner.factory.tok_env().tok_trie();
        if (id as usize) < trie.vocab_size() {
            trie.token(id)
        } else {
            &[]
        }
    }

    /// The text of `ids` as the grammar saw it (special tokens omitted, invalid UTF-8 replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let trie = self.inner.factory.tok_env().tok_trie();
        String::from_utf8_lossy(&trie.decode_ext(ids, false)).into_owned()
    }

    /// Tokenizes `text` the way the grammar compiler does (no special tokens).
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.inner.factory.tok_env().tokenize(text)
    }
}

/// `toktrie::TokenizerEnv` over a `tokenizers` 0.22 tokenizer.
struct ByteTokenizerEnv {
    hf: tokenizers::Tokenizer,
    trie: TokTrie,
}

impl TokenizerEnv for ByteTokenizerEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |s| {
            // The trie's greedy tokenization is the fallback if the tokenizer fails.
            self.hf
                .encode(s, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_else(|_| self.trie.greedy_tokenize(s.as_bytes()))
        })
    }

    fn tokenize_bytes_special(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |s| {
            self.trie.tokenize_with_special(s, |s| {
                self.hf
                    .encode(s, false)
                    .map(|e| e.get_ids().to_vec())
                    .unwrap_or_else(|_| self.trie.greedy_tokenize(s.as_bytes()))
            })
        })
    }
}

impl ByteTokenizerEnv {
    fn new(mut hf: tokenizers::Tokenizer, eos_ids: &[u32], n_vocab: Option<usize>) -> Result<Self> {
        // Tokenizing grammar literals must not prepend a space (SentencePiece "Prepend"
        // normalizer, Metaspace `prepend_scheme`).
        if let Some(n) = hf.get_normalizer().cloned() {
            hf.with_normalizer(remove_prepend_normalizer(n));
        }
        if let Some(pt) = hf.get_pre_tokenizer().cloned() {
            hf.with_pre_tokenizer(Some(fix_metaspace(pt)));
        }

        let mut kind = DecoderKind::default();
        if let Some(d) = hf.get_decoder() {
            check_decoder(d, &mut kind);
        }
        if !kind.byte_fallback && !kind.byte_level {
            return Err(Error::Tokenizer(format!(
                "unsupported tokenizer decoder (need ByteLevel or ByteFallback): {:?}",
                hf.get_decoder()
            )));
        }

        let tok_vocab = hf.get_vocab_size(true);
        let mut token_bytes: Vec<Vec<u8>> = vec![Vec::new(); tok_vocab];
        let mut specials = HashSet::new();
        let mut added: Vec<_> = hf.get_added_tokens_decoder().into_iter().collect();
        added.sort_by_key(|(id, _)| *id);
        for (id, tok) in &added {
            let Some(slot) = token_bytes.get_mut(*id as usize) else {
                continue;
            };
            // As llguidance does: added tokens of the form <...> count as special.
            if tok.special || (tok.content.starts_with('<') && tok.content.ends_with('>')) {
                specials.insert(*id);
            } else {
                *slot = tok.content.clone().into_bytes();
            }
        }

        let char_map = byte_level_char_map();
        for id in 0..tok_vocab as u32 {
            let Some(name) = hf.id_to_token(id) else {
                continue;
            };
            let bytes = if specials.contains(&id) {
                let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                b.extend_from_slice(name.as_bytes());
                b
            } else if !token_bytes[id as usize].is_empty() {
                continue; // a non-special added token, already set
            } else if kind.byte_fallback {
                if name.len() == 6 && name.starts_with("<0x") && name.ends_with('>') {
                    match u8::from_str_radix(&name[3..5], 16) {
                        Ok(b) => vec![b],
                        Err(_) => name.into_bytes(),
                    }
                } else {
                    name.replace(kind.space_ch, " ").into_bytes()
                }
            } else {
                // Byte-level: every char maps back to one byte; a token that does not is
                // left empty (never allowed) rather than guessed.
                match name
                    .chars()
                    .map(|c| char_map.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                {
                    Some(b) => b,
                    None => continue,
                }
            };
            token_bytes[id as usize] = bytes;
        }

        let n_vocab = n_vocab.unwrap_or(tok_vocab);
        if n_vocab < tok_vocab {
            return Err(Error::Tokenizer(format!(
                "vocab_size {n_vocab} is smaller than the tokenizer's {tok_vocab} tokens"
            )));
        }
        // Ids past the tokenizer (padding in the logits) become unreachable special tokens.
        while token_bytes.len() < n_vocab {
            let mut name = format!(".<[{}]>", token_bytes.len()).into_bytes();
            name[0] = TokTrie::SPECIAL_TOKEN_MARKER;
            token_bytes.push(name);
        }

        let Some((&first, _)) = eos_ids.split_first() else {
            return Err(Error::Tokenizer(
                "at least one EOS token id is required".into(),
            ));
        };
        if let Some(&bad) = eos_ids.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(Error::Tokenizer(format!(
                "EOS token id {bad} is out of range (vocabulary of {n_vocab})"
            )));
        }
        let info = TokRxInfo::new(n_vocab as u32, first);
        let mut trie = TokTrie::from(&info, &token_bytes);
        if eos_ids.len() > 1 {
            trie = trie.with_eos_tokens(eos_ids);
        }
        Ok(ByteTokenizerEnv { hf, trie })
    }
}

struct DecoderKind {
    byte_level: bool,
    byte_fallback: bool,
    /// The character a byte-fallback vocabulary writes for a space (`▁`).
    space_ch: char,
}

impl Default for DecoderKind {
    fn default() -> Self {
        DecoderKind {
            byte_level: false,
            byte_fallback: false,
            space_ch: ' ',
        }
    }
}

fn check_decoder(d: &DecoderWrapper, kind: &mut DecoderKind) {
    match d {
        DecoderWrapper::ByteFallback(_) => kind.byte_fallback = true,
        DecoderWrapper::ByteLevel(_) => kind.byte_level = true,
        DecoderWrapper::Replace(r) if r.content == " " => {
            // `Replace::pattern` is private; its serialized form carries it.
            if let Ok(v) = serde_json::to_value(r)
                && let Some(s) = v["pattern"]["String"].as_str()
            {
                let mut chars = s.chars();
                if let (Some(ch), None) = (chars.next(), chars.next()) {
                    kind.space_ch = ch;
                }
            }
        }
        DecoderWrapper::Sequence(seq) => {
            for d in seq.get_decoders() {
                check_decoder(d, kind);
            }
        }
        _ => {}
    }
}

fn remove_prepend_normalizer(n: NormalizerWrapper) -> Option<NormalizerWrapper> {
    match n {
        NormalizerWrapper::Prepend(_) => None,
        NormalizerWrapper::Sequence(seq) => {
            let kept: Vec<_> = seq
                .as_ref()
                .iter()
                .filter_map(|n| remove_prepend_normalizer(n.clone()))
                .collect();
            (!kept.is_empty())
                .then(|| NormalizerWrapper::Sequence(normalizers::Sequence::new(kept)))
        }
        n => Some(n),
    }
}

fn fix_metaspace(pt: PreTokenizerWrapper) -> PreTokenizerWrapper {
    use tokenizers::pre_tokenizers::{metaspace::PrependScheme, sequence::Sequence};
    match pt {
        PreTokenizerWrapper::Metaspace(mut ms) => {
            ms.prepend_scheme = PrependScheme::Never;
            PreTokenizerWrapper::Metaspace(ms)
        }
        PreTokenizerWrapper::Sequence(seq) => PreTokenizerWrapper::Sequence(Sequence::new(
            seq.as_ref()
                .iter()
                .map(|p| fix_metaspace(p.clone()))
                .collect(),
        )),
        pt => pt,
    }
}

/// GPT-2's byte-level alphabet: printable bytes stand for themselves, the others for
/// U+0100 onwards in byte order.
fn byte_level_char_map() -> HashMap<char, u8> {
    let self_mapped =
        |c: char| matches!(c, '!'..='~' | '\u{00A1}'..='\u{00AC}' | '\u{00AE}'..='\u{00FF}');
    let mut map = HashMap::with_capacity(256);
    let mut next = 0x100u32;
    for byte in 0..=255u8 {
        let c = byte as char;
        if self_mapped(c) {
            map.insert(c, byte);
        } else {
            map.insert(
                char::from_u32(next).expect("U+0100..U+0143 are chars"),
                byte,
            );
            next += 1;
        }
    }
    map
}
