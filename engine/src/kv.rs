//! KV page accounting: a pool of fixed-size pages with reference counts, a content-hash index
//! for prefix sharing, and `KvContext`, a sequence's view of its pages with copy-on-write
//! forking. The page *contents* live in the backend; this module only decides who owns which
//! page, so it is the same for every device.
//!
//! # State
//! A page is either free, in use (refcount > 0), or cached (refcount 0 but still indexed by
//! its content hash, reclaimable). `alloc` takes free pages first, then evicts the least
//! recently cached ones.

use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub type PageId = u32;

/// What `alloc` does when too few pages are available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExhausted {
    /// Return `Error::KvExhausted` at once.
    Fail,
    /// Wait up to this long for releases, then fail.
    Wait(Duration),
}

/// Pool counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub total: usize,
    pub free: usize,
    /// Pages with refcount 0 kept for prefix reuse (counted as available).
    pub cached: usize,
    pub in_use: usize,
    /// Pages referenced by more than one owner.
    pub shared: usize,
}

struct Inner {
    free: Vec<PageId>,
    refs: Vec<u32>,
    hash: Vec<Option<u64>>,
    by_hash: HashMap<u64, PageId>,
    /// Cached (refcount 0, hashed) pages by the time they became unused: eviction order.
    cached: BTreeMap<u64, PageId>,
    cached_at: Vec<u64>,
    clock: u64,
}

pub struct KvPool {
    inner: Mutex<Inner>,
    released: Condvar,
    page_size: usize,
    total: usize,
    on_exhausted: OnExhausted,
}

impl KvPool {
    pub fn new(num_pages: usize, page_size: usize, on_exhausted: OnExhausted) -> Self {
        KvPool {
            inner: Mutex::new(Inner {
                free: (0..num_pages as PageId).rev().collect(),
                refs: vec![0; num_pages],
                hash: vec![None; num_pages],
                by_hash: HashMap::new(),
                cached: BTreeMap::new(),
                cached_at: vec![0; num_pages],
                clock: 0,
            }),
            released: Condvar::new(),
            page_size,
            total: num_pages,
            on_exhausted,
        }
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }

    pub fn num_pages(&self) -> usize {
        self.total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Allocates `n` pages (refcount 1 each), all or nothing.
    pub fn alloc(&self, n: usize) -> Result<Vec<PageId>> {
        let mut g = self.lock();
        let deadline = match self.on_exhausted {
            OnExhausted::Wait(d) => Some(std::time::Instant::now() + d),
            OnExhausted::Fail => None,
        };
        loop {
            let avail = g.free.len() + g.cached.len();
            if avail >= n {
                break;
            }
            let now = std::time::Instant::now();
            match deadline {
                Some(d) if now < d && n <= self.total => {
                    g = self
                        .released
                        .wait_timeout(g, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                _ => {
                    return Err(Error::KvExhausted {
                        requested: n,
                        free: avail,
                        total: self.total,
                    });
                }
            }
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let p = match g.free.pop() {
                Some(p) => p,
                None => {
                    // Evict the oldest cached page and forget its content hash.
                    let (_, p) = g.cached.pop_first().expect("counted above");
                    if let Some(h) = g.hash[p as usize].take() {
                        g.by_hash.remove(&h);
                    }
                    p
                }
            };
            g.refs[p as usize] = 1;
            out.push(p);
        }
        Ok(out)
    }

    /// Adds one reference to each page (sharing).
    pub fn retain(&self, pages: &[PageId]) {
        let mut g = self.lock();
        for &p in pages {
            let i = p as usize;
            if g.refs[i] == 0 {
                let at = g.cached_at[i];
                g.cached.remove(&at);
            }
            g.refs[i] += 1;
        }
    }

    /// Drops one reference to each page; unreferenced pages become free (or cached when they
    /// carry a content hash).
    pub fn release(&self, pages: &[PageId]) {
        let mut g = self.lock();
        for &p in pages {
            let i = p as usize;
            debug_assert!(g.refs[i] > 0, "double release of page {p}");
            if g.refs[i] == 0 {
                continue;
            }
            g.refs[i] -= 1;
            if g.refs[i] == 0 {
                if g.hash[i].is_some() {
                    g.clock += 1;
                    let c = g.clock;
                    g.cached_at[i] = c;
                    g.cached.insert(c, p);
                } else {
                    g.free.push(p);
                }
            }
        }
        drop(g);
        self.released.notify_all();
    }

    pub fn refcount(&self, page: PageId) -> u32 {
        self.lock().refs[page as usize]
    }

    /// Whether the page is in the content-hash index (others may look it up and share it).
    pub fn is_indexed(&self, page: PageId) -> bool {
        self.lock().hash[page as usize].is_some()
    }

    /// Registers a full page under its content hash so that other contexts can share it.
    /// Returns the page already registered under `hash` if there is one (retained for the
    /// caller), else `None`.
    pub fn commit(&self, page: PageId, hash: u64) -> Option<PageId> {
        let mut g = self.lock();
        if let Some(&other) = g.by_hash.get(&hash) {
            if other != page {
                drop(g);
                self.retain(&[other]);
                return Some(other);
            }
            return None;
        }
        g.by_hash.insert(hash, page);
        g.hash[page as usize] = Some(hash);
        None
    }

    /// The page holding content `hash`, retained for the caller.
    pub fn lookup(&self, hash: u64) -> Option<PageId> {
        let p = *self.lock().by_hash.get(&hash)?;
        self.retain(&[p]);
        Some(p)
    }

    pub fn stats(&self) -> PoolStats {
        let g = self.lock();
        PoolStats {
            total: self.total,
            free: g.free.len(),
            cached: g.cached.len(),
            in_use: g.refs.iter().filter(|&&r| r > 0).count(),
            shared: g.refs.iter().filter(|&&r| r > 1).count(),
        }
    }
}

/// Hash of a full page given the hash of everything before it: equal hashes mean equal tokens
/// at equal positions after an equal prefix, hence equal K/V (for plain causal attention).
pub fn page_hash(prev: u64, tokens: &[u32], positions: &[u32]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    prev.hash(&mut h);
    tokens.hash(&mut h);
    positions.hash(&mut h);
    h.finish()
}

/// Where the next forward pass of a context reads and writes.
#[derive(Debug, Clone)]
pub struct KvPlan {
    pub pages: Vec<PageId>,
    /// Tokens already in the pages.
    pub kv_len: usize,
    /// Page copies (src, dst) to run before the pass: copy-on-write of a shared last page.
    pub copies: Vec<(PageId, PageId)>,
}

/// One sequence's KV pages and the tokens written into them. Dropping it releases the pages.
pub struct KvContext {
    pool: Arc<KvPool>,
    pages: Vec<PageId>,
    tokens: Vec<u32>,
    positions: Vec<u32>,
    /// Chain hash of every full page committed so far.
    hashes: Vec<u64>,
}

impl KvContext {
    pub fn new(pool: Arc<KvPool>) -> Self {
        KvContext {
            pool,
            pages: Vec::new(),
            tokens: Vec::new(),
            positions: Vec::new(),
            hashes: Vec::new(),
        }
    }

    /// A context whose leading full pages are shared with earlier contexts that committed the
    /// same tokens (at positions 0..). Returns it and the number of tokens already cached; feed
    /// the rest with `plan`/`commit`.
    pub fn with_prefix(pool: Arc<KvPool>, tokens: &[u32]) -> (Self, usize) {
        let mut ctx = KvContext::new(pool);
        let ps = ctx.pool.page_size;
        let mut prev = 0u64;
        for chunk in tokens.chunks_exact(ps) {
            let start = ctx.tokens.len() as u32;
            let pos: Vec<u32> = (start..start + ps as u32).collect();
            let h = page_hash(prev, chunk, &pos);
            match ctx.pool.lookup(h) {
                Some(p) => {
                    ctx.pages.push(p);
                    ctx.tokens.extend_from_slice(chunk);
                    ctx.positions.extend(pos);
                    ctx.hashes.push(h);
                    prev = h;
                }
                None => break,
            }
        }
        let n = ctx.tokens.len();
        (ctx, n)
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn pages(&self) -> &[PageId] {
        &self.pages
    }

    /// Next position (one past the last committed one).
    pub fn next_position(&self) -> u32 {
        self.positions.last().map_or(0, |p| p + 1)
    }

    /// Makes room for `n` more tokens: allocates pages and un-shares the partially filled last
    /// page if another context also holds it. On error nothing changes.
    pub fn plan(&mut self, n: usize) -> Result<KvPlan> {
        let ps = self.pool.page_size;
        let len = self.tokens.len();
        let need = (len + n).div_ceil(ps);
        let extra = need.saturating_sub(self.pages.len());
        let partial = !len.is_multiple_of(ps) && n > 0;
        // Copy before writing into a page that someone else holds, or that is indexed by its
        // content hash (after `truncate` into it): its cached content must stay as hashed.
        let cow = partial && {
            let p = self.pages[len / ps];
            self.pool.refcount(p) > 1 || self.pool.is_indexed(p)
        };
        let mut fresh = self.pool.alloc(extra + cow as usize)?;
        let mut copies = Vec::new();
        if cow {
            let dst = fresh.pop().expect("allocated");
            let src = self.pages[len / ps];
            copies.push((src, dst));
            self.pages[len / ps] = dst;
            self.pool.release(&[src]);
        }
        self.pages.extend(fresh);
        Ok(KvPlan {
            pages: self.pages.clone(),
            kv_len: len,
            copies,
        })
    }

    /// Records that `tokens` at `positions` were written after the previous contents, and
    /// registers newly filled pages for prefix sharing (only when positions are contiguous
    /// from 0, the plain causal case the hash describes).
    pub fn commit(&mut self, tokens: &[u32], positions: &[u32]) {
        let ps = self.pool.page_size;
        self.tokens.extend_from_slice(tokens);
        self.positions.extend_from_slice(positions);
        while self.hashes.len() < self.tokens.len() / ps {
            let i = self.hashes.len();
            let pos = &self.positions[i * ps..(i + 1) * ps];
            if pos
                .iter()
                .enumerate()
                .any(|(j, &p)| p as usize != i * ps + j)
            {
                // Not plain positions: never share; mark with a hash nobody else computes.
                break;
            }
            let prev = if i == 0 { 0 } else { self.hashes[i - 1] };
            let h = page_hash(prev, &self.tokens[i * ps..(i + 1) * ps], pos);
            if let Some(other) = self.pool.commit(self.pages[i], h) {
                // Same content already cached elsewhere: use that page, free ours.
                let mine = std::mem::replace(&mut self.pages[i], other);
                self.pool.release(&[mine]);
            }
            self.hashes.push(h);
        }
    }

    /// A copy of this context that shares every page; either side copies the partially
    /// filled last page before writing to it.
    pub fn fork(&self) -> KvContext {
        self.pool.retain(&self.pages);
        KvContext {
            pool: self.pool.clone(),
            pages: self.pages.clone(),
            tokens: self.tokens.clone(),
            positions: self.positions.clone(),
            hashes: self.hashes.clone(),
        }
    }

    /// Keeps only the first `new_len` tokens (pages past the new end are released).
    pub fn truncate(&mut self, new_len: usize) {
        let ps = self.pool.page_size;
        if new_len >= self.tokens.len() {
            return;
        }
        self.tokens.truncate(new_len);
        self.positions.truncate(new_len);
        self.hashes.truncate(new_len / ps);
        let keep = new_len.div_ceil(ps);
        let dropped: Vec<PageId> = self.pages.drain(keep..).collect();
        self.pool.release(&dropped);
    }
}

impl Drop for KvContext {
    fn drop(&mut self) {
        self.pool.release(&self.pages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_release_and_exhaustion() {
        let pool = KvPool::new(4, 2, OnExhausted::Fail);
        let a = pool.alloc(3).unwrap();
        assert!(matches!(
            pool.alloc(2),
            Err(Error::KvExhausted {
                requested: 2,
                free: 1,
                total: 4
            })
        ));
        pool.release(&a);
        assert_eq!(pool.alloc(4).unwrap().len(), 4);
    }

    #[test]
    fn wait_policy_gets_pages_released_meanwhile() {
        let pool = Arc::new(KvPool::new(2, 2, OnExhausted::Wait(Duration::from_secs(5))));
        let a = pool.alloc(2).unwrap();
        let p2 = pool.clone();
        let t = std::thread::spawn(move || p2.alloc(1).map(|v| v.len()));
        std::thread::sleep(Duration::from_millis(50));
        pool.release(&a[..1]);
        assert_eq!(t.join().unwrap().unwrap(), 1);
    }
}
