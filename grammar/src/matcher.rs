//! [`Matcher`]: one generation's walk through a grammar, token by token.

use crate::error::{Error, Result, short};
use crate::grammar::Grammar;
use crate::mask;
use crate::tok_env::TokEnv;
use engine::Brle;

/// The state of one constrained generation: which tokens may come next, given the tokens
/// accepted so far. Not `Sync`; one per sequence (a fork clones it).
///
/// The loop is: [`next_token_mask`](Matcher::next_token_mask) → sample under that mask →
/// [`accept_tokens`](Matcher::accept_tokens) with the sampled token → repeat until an EOS
/// token is sampled (it is allowed exactly where the grammar may end) or
/// [`is_terminated`](Matcher::is_terminated).
#[derive(Clone)]
pub struct Matcher {
    env: TokEnv,
    inner: llguidance::Matcher,
    /// The state right after construction, for `reset`.
    initial: llguidance::Matcher,
}

impl Matcher {
    /// Compiles `grammar` for `env`'s tokenizer, or takes the compiled form from `env`'s cache
    /// (keyed by the grammar's kind and source text).
    pub fn new(env: &TokEnv, grammar: &Grammar) -> Result<Matcher> {
        let key = grammar.cache_key();
        let initial = match env.inner.cache.get(&key) {
            Some(m) => m,
            None => {
                let parser = env
                    .inner
                    .factory
                    .create_parser(grammar.top_level())
                    .map_err(|e| Error::Compile(short(e)))?;
                let m = llguidance::Matcher::new(Ok(parser));
                if let Some(e) = m.get_error() {
                    return Err(Error::Compile(short(e)));
                }
                env.inner.cache.insert(key, &m);
                m
            }
        };
        Ok(Matcher {
            env: env.clone(),
            inner: initial.clone(),
            initial,
        })
    }

    /// As [`Matcher::new`], but a grammar that does not compile gives a *failed* matcher
    /// instead of an error, for the WIT constructor, which cannot return one: its
    /// [`error`](Matcher::error) says why, `accept_tokens` refuses with that message, its
    /// mask allows only EOS and it is terminated.
    pub fn new_or_failed(env: &TokEnv, grammar: &Grammar) -> Matcher {
        Matcher::new(env, grammar).unwrap_or_else(|e| {
            let failed = llguidance::Matcher::new(Err(anyhow::Error::new(e)));
            Matcher {
                env: env.clone(),
                inner: failed.clone(),
                initial: failed,
            }
        })
    }

    /// Advances over `tokens` (the tokens sampled since the last call, usually one). If any
    /// of them is not allowed where it stands, nothing is consumed and the error names the
    /// first offender. An EOS token is accepted where the grammar may end, and terminates
    /// the matcher.
    pub fn accept_tokens(&mut self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        if let Some(e) = self.inner.get_error() {
            return Err(Error::Matcher(short(e)));
        }
        let vocab = self.env.vocab_size();
        if let Some((index, &token)) = tokens
            .iter()
            .enumerate()
            .find(|&(_, &t)| t as usize >= vocab)
        {
            return Err(Error::Rejected {
                index,
                token,
                text: format!("<out of vocabulary {vocab}>"),
            });
        }
        // Check first: llguidance puts a matcher that consumed a bad token into a permanent
        // error state, and the WIT contract wants a refused call to leave the matcher usable.
        let ok = self
            .inner
            .validate_tokens(tokens)
            .map_err(|e| Error::Matcher(short(e)))?;
        if ok == tokens.len() {
            return self
                .inner
                .consume_tokens(tokens)
                .map_err(|e| Error::Matcher(short(e)));
        }
        // llguidance stops a matcher as soon as the grammar is complete and admits nothing
        // more (the closing `}` of a schema'd object) and then validates no token, but the
        // sampler still has to pick EOS there: trailing EOS tokens after a stop are accepted.
        let (head, tail) = tokens.split_at(ok);
        if tail.iter().all(|t| self.env.eos_ids().contains(t)) {
            let mut trial = self.inner.clone();
            if trial.consume_tokens(head).is_ok() && trial.is_stopped() && !trial.is_error() {
                self.inner = trial;
                return Ok(());
            }
        }
        let token = tokens[ok];
        Err(Error::Rejected {
            index: ok,
            token,
            text: self.token_text(token),
        })
    }

    /// The tokens allowed next, as an [`engine::Brle`] of length
    /// [`TokEnv::vocab_size`]: runs alternate starting with a (possibly empty) `false` run,
    /// and `true` means *allowed*, the engine's `logit_mask` convention. EOS tokens are
    /// allowed where the grammar may end; once terminated only EOS is allowed. If the matcher
    /// has failed (see [`Matcher::error`]) the mask allows only EOS, so generation ends.
    pub fn next_token_mask(&mut self) -> Brle {
        let words = self.next_token_bitset();
        mask::bitset_to_brle(&words, self.env.vocab_size())
    }

    /// The same mask as a bitset: bit `i % 32` of word `i / 32` is set iff token `i` is
    /// allowed; `vocab_size.div_ceil(32)` words, bits past the vocabulary clear.
    pub fn next_token_bitset(&mut self) -> Vec<u32> {
        let vocab = self.env.vocab_size();
        let mut words = match self.inner.compute_mask_or_eos() {
            Ok(v) => v.as_slice().to_vec(),
            Err(_) => self.eos_bitset(),
        };
        words.resize(vocab.div_ceil(32), 0);
        mask::clear_past(&mut words, vocab);
        words
    }

    /// Whether generation under this grammar is over: an EOS token was accepted, or the
    /// grammar is complete and admits no further text (a fixed-length regex that has been
    /// matched), or the matcher has failed.
    pub fn is_terminated(&self) -> bool {
        self.inner.is_stopped()
    }

    /// Whether the text so far is a complete match (an EOS token would be accepted now).
    pub fn is_accepting(&mut self) -> bool {
        if self.inner.is_error() {
            false
        } else if self.inner.is_stopped() {
            true
        } else {
            self.inner.is_accepting().unwrap_or(false)
        }
    }

    /// Back to the state right after [`Matcher::new`], also after a failure.
    pub fn reset(&mut self) {
        self.inner = self.initial.clone();
    }

    /// Why the matcher failed, if it has (llguidance limits or an internal error).
    pub fn error(&self) -> Option<String> {
        self.inner.get_error()
    }

    /// The tokenizer environment this matcher was compiled for.
    pub fn tok_env(&self) -> &TokEnv {
        &self.env
    }

    fn token_text(&self, token: u32) -> String {
        let bytes = self.env.token_bytes(token);
        match bytes.split_first() {
            Some((&toktrie::TokTrie::SPECIAL_TOKEN_MARKER, name)) => {
                String::from_utf8_lossy(name).into_owned()
            }
            _ => String::from_utf8_lossy(bytes).into_owned(),
        }
    }

    fn eos_bitset(&self) -> Vec<u32> {
        let mut words = vec![0u32; self.env.vocab_size().div_ceil(32)];
        for &t in self.env.eos_ids() {
            words[t as usize / 32] |= 1 << (t % 32);
        }
        words
    }
}
