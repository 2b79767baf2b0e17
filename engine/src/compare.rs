//! The comparison kernel: `[x < y]` over batches laid out block by block.
//!
//! A batch of `m` comparisons is cut into blocks of 64 lanes. For each block the caller
//! supplies the `w` bit-planes (most significant first) of `x` and of `d = x ^ y`, both
//! shares; the kernel keeps each block's planes together (block-major), so that the
//! transposition, the first AND layer and every prefix layer touch one block's data while
//! it is in cache, and every layer runs in parallel over blocks with no copying between
//! layers. Communication: one round per AND layer, `1 + ceil(log2 w)` in all
//! (`ceil(log2 w)` for inputs known to differ: [`less_than_distinct_blocks`]). In
//! malicious mode, large batches run as a borrow chain instead (`less_than_ripple`):
//! fewer gates to verify, more rounds.
//!
//! Every node of the prefix tree but the least significant holds `(lessval, eq)`: `eq`
//! says whether `x` and `y` agree on the node's bits, and `lessval` is `[x < y]` on them
//! *where they differ* (anything where they agree). A single bit needs no AND for that:
//! `lessval_j = !x_j`, `eq_j = !d_j`. Only the least significant node holds the true
//! `less` (`!x_j & d_j` at the leaf, one AND per block). A merge of a high node `H` and a
//! low node `L` is a multiplexer on `neq_H = !eq_H`:
//! `less = less_L ^ (neq_H & (less_H ^ less_L))`, `eq = eq_H & eq_L`,
//! which is right in both forms (where the high bits agree the low node decides, else the
//! high one). The least significant node is never the high half of a merge, so its
//! equality is never computed. For `w`-bit keys this takes `1 + (w - 1) + (w - 1 - r)`
//! ANDs per comparison (`r` the merges of the least significant node, about `log2 w`),
//! against `3w - 1 - r` when every leaf computed its own `less`: 121 rather than 184 at 64
//! bits, in as many rounds.

use crate::channel::Peer;
use crate::error::EngineError;
use crate::party::{bytes_into_words, word_at, words_into_bytes, Party, Words};
use crate::share::{x0_masks, Shared};
use rayon::prelude::*;
use zeroize::Zeroize;

/// Widest key the kernel handles.
pub const MAX_WIDTH: usize = 128;

/// `z_i` of an AND gate on one word, before resharing.
#[inline(always)]
fn and_word(xa: u64, xb: u64, ya: u64, yb: u64, r: u64, s: u64) -> u64 {
    (xa & (ya ^ yb)) ^ (xb & ya) ^ r ^ s
}

/// Rounds `k` up to an even number, so each block's stream slice starts on an AES block.
fn even(k: usize) -> usize {
    k + (k & 1)
}

/// Computes `[x < y]` for `nb * 64` lanes. `fill(blk, xa, xb, da, db)` writes block
/// `blk`'s `w` planes of `x` and `d = x ^ y` (this party's two shares of each; every
/// word, whatever the slices held before). Returns one word per block (lane `r` of word
/// `blk` is comparison `64 * blk + r`).
pub fn less_than_blocks<F>(
    party: &mut Party,
    nb: usize,
    w: usize,
    fill: F,
) -> Result<Shared, EngineError>
where
    F: Fn(usize, &mut [u64], &mut [u64], &mut [u64], &mut [u64]) + Sync,
{
    less_than_impl(party, nb, w, fill, false)
}

/// [`less_than_blocks`] for inputs the caller knows to differ in every lane it reads
/// (the quicksort's unique keys against their pivot). Then the root's `lessval` is
/// already `[x < y]`, so the least significant node needs no true `less`: layer 0's
/// AND and its round go, and in semi-honest mode the leaves feed the first prefix
/// layer's ANDs in the same pass that lays out the planes (no leaf table written and
/// read back). Lanes where `x = y` (the padding past the last element: zero against
/// zero) come out as `!x` of the least significant bit, a public 1 for the padding.
pub fn less_than_distinct_blocks<F>(
    party: &mut Party,
    nb: usize,
    w: usize,
    fill: F,
) -> Result<Shared, EngineError>
where
    F: Fn(usize, &mut [u64], &mut [u64], &mut [u64], &mut [u64]) + Sync,
{
    less_than_impl(party, nb, w, fill, true)
}

fn less_than_impl<F>(
    party: &mut Party,
    nb: usize,
    w: usize,
    fill: F,
    distinct: bool,
) -> Result<Shared, EngineError>
where
    F: Fn(usize, &mut [u64], &mut [u64], &mut [u64], &mut [u64]) + Sync,
{
    if w == 0 || w > MAX_WIDTH {
        return Err(EngineError::InvalidInput(format!(
            "comparison width {w} not in 1..={MAX_WIDTH}"
        )));
    }
    if party.malicious() && nb >= RIPPLE_MIN_BLOCKS {
        return less_than_ripple(party, nb, w, fill);
    }
    let nots = x0_masks(party.id());
    let [not_a, not_b] = nots;
    if distinct && !party.malicious() && w > 1 {
        let (state, z, msg) = fused_leaves(party, nb, w, &fill);
        return prefix_layers(party, state, z, msg, nb);
    }

    // Layer 0: lessval_j = !x_j and eq_j = !d_j (free) for every plane; the least
    // significant plane's true less, !x & d, is the layer's one AND per block. Block
    // `blk`'s stream words start at `blk * 2`, so a task's blocks take one contiguous
    // range.
    let last = w - 1;
    let sp = party.zero.prev.reserve(nb * 2);
    let sn = party.zero.next.reserve(nb * 2);
    let mut less_a = party.scratch.take_words(nb * w);
    let mut less_b = party.scratch.take_words(nb * w);
    let mut eq_a = party.scratch.take_words(nb * w);
    let mut eq_b = party.scratch.take_words(nb * w);
    // The last plane's `!x` shares, kept for the verification's record (the AND
    // overwrites them in the less planes).
    let mut last_xa = party.scratch.take_words(nb);
    let mut last_xb = party.scratch.take_words(nb);
    let mut msg = party.take_message(nb);
    {
        let (prev, next) = (&party.zero.prev, &party.zero.next);
        let fill = &fill;
        less_a
            .par_chunks_mut(TASK_BLOCKS * w)
            .zip(less_b.par_chunks_mut(TASK_BLOCKS * w))
            .zip(eq_a.par_chunks_mut(TASK_BLOCKS * w))
            .zip(eq_b.par_chunks_mut(TASK_BLOCKS * w))
            .zip(last_xa.par_chunks_mut(TASK_BLOCKS))
            .zip(last_xb.par_chunks_mut(TASK_BLOCKS))
            .zip(msg.par_chunks_mut(TASK_BLOCKS * 8))
            .enumerate()
            .for_each_init(
                || Layer0Scratch::new(w),
                |sc, (task, ((((((la, lb), ea), eb), lxa), lxb), mb))| {
                    let b0 = task * TASK_BLOCKS;
                    let count = la.len() / w;
                    let (r, s) = (&mut sc.r[..count * 2], &mut sc.s[..count * 2]);
                    prev.fill_at(sp + b0 as u64, r);
                    next.fill_at(sn + b0 as u64, s);
                    for i in 0..count {
                        let (xa, xb, da, db) = (
                            &mut sc.xa[..w],
                            &mut sc.xb[..w],
                            &mut sc.da[..w],
                            &mut sc.db[..w],
                        );
                        fill(b0 + i, xa, xb, da, db);
                        let o = i * w..(i + 1) * w;
                        let (la, lb) = (&mut la[o.clone()], &mut lb[o.clone()]);
                        let (ea, eb) = (&mut ea[o.clone()], &mut eb[o]);
                        for j in 0..w {
                            la[j] = xa[j] ^ not_a;
                            lb[j] = xb[j] ^ not_b;
                            ea[j] = da[j] ^ not_a;
                            eb[j] = db[j] ^ not_b;
                        }
                        lxa[i] = la[last];
                        lxb[i] = lb[last];
                        la[last] =
                            and_word(la[last], lb[last], da[last], db[last], r[2 * i], s[2 * i]);
                        mb[8 * i..8 * i + 8].copy_from_slice(&la[last].to_le_bytes());
                    }
                },
            );
    }
    #[cfg(feature = "fault-injection")]
    if party.corrupt_bytes(crate::fault::ComputeSite::AndGate, &mut msg) {
        less_a[last] ^= 1;
    }
    party.send_message(Peer::Prev, msg)?;
    let got = party.recv_message(Peer::Next, nb)?;
    for blk in 0..nb {
        less_b[blk * w + last] = word_at(&got, blk);
    }
    if party.malicious() {
        // Record layer 0's gates `!x & d` on the last plane for verification (`d` is
        // `!eq`).
        let [xa, xb, da, db, za, zb] = party.pending.grow(nb);
        for blk in 0..nb {
            let at = blk * w + last;
            xa[blk] = last_xa[blk];
            xb[blk] = last_xb[blk];
            da[blk] = eq_a[at] ^ not_a;
            db[blk] = eq_b[at] ^ not_b;
            za[blk] = less_a[at];
            zb[blk] = less_b[at];
        }
    }
    party.scratch.give_words(last_xa);
    party.scratch.give_words(last_xb);
    party.recycle_message(got);

    // Prefix layers. `state` holds `m` nodes per block, compactly; each pass merges the
    // previous layer's products into the next, smaller state and, in the same sweep over
    // the block, computes this layer's local AND shares, so each block is touched once
    // per layer while it is in cache.
    let state = Nodes {
        m: w,
        less_a,
        less_b,
        eq_a,
        eq_b,
    };
    let (z, msg) = prefix_and_local(party, &state, nb)?;
    prefix_layers(party, state, z, msg, nb)
}

/// The prefix layers from `state` (`m` nodes a block), whose first layer's local AND
/// shares `z` and message `msg` are computed: one round a layer, down to one node, whose
/// `less` is the result.
fn prefix_layers(
    party: &mut Party,
    mut state: Nodes,
    mut z: Words,
    mut msg: Vec<u8>,
    nb: usize,
) -> Result<Shared, EngineError> {
    let nots = x0_masks(party.id());
    while state.m > 1 {
        let layer = Layer::of(state.m);
        // The other share of this layer's products is read straight from the message.
        #[cfg(feature = "fault-injection")]
        if party.corrupt_bytes(crate::fault::ComputeSite::AndGate, &mut msg) {
            z[0] ^= 1;
        }
        party.send_message(Peer::Prev, msg)?;
        let zb = party.recv_message(Peer::Next, z.len())?;
        if party.malicious() {
            record_prefix_layer(party, &state, layer, &z, &zb, nb);
        }
        let next_m = layer.next_m();
        let mut next = Nodes {
            m: next_m,
            less_a: party.scratch.take_words(nb * next_m),
            less_b: party.scratch.take_words(nb * next_m),
            eq_a: party.scratch.take_words(nb * next_m),
            eq_b: party.scratch.take_words(nb * next_m),
        };
        let next_layer = (next_m > 1).then(|| Layer::of(next_m));
        let next_count = next_layer.map_or(0, |l| l.count());
        let (sp, sn, stride) = match next_layer {
            Some(l) => {
                let stride = even(l.count());
                (
                    party.zero.prev.reserve(nb * stride),
                    party.zero.next.reserve(nb * stride),
                    stride,
                )
            }
            None => (0, 0, 0),
        };
        // One spare word per block after the last layer keeps the zipped chunks aligned.
        let zc_len = next_count.max(1);
        let mut next_z = party.scratch.take_words(nb * zc_len);
        let mut next_msg = party.take_message(nb * zc_len);
        {
            let (prev, next_prg) = (&party.zero.prev, &party.zero.next);
            let cur = &state;
            let count = layer.count();
            let (z, zb) = (&z, &zb);
            next.less_a
                .par_chunks_mut(TASK_BLOCKS * next_m)
                .zip(next.less_b.par_chunks_mut(TASK_BLOCKS * next_m))
                .zip(next.eq_a.par_chunks_mut(TASK_BLOCKS * next_m))
                .zip(next.eq_b.par_chunks_mut(TASK_BLOCKS * next_m))
                .zip(next_z.par_chunks_mut(TASK_BLOCKS * zc_len))
                .zip(next_msg.par_chunks_mut(TASK_BLOCKS * zc_len * 8))
                .enumerate()
                .for_each_init(
                    || {
                        (
                            vec![0u64; TASK_BLOCKS * stride],
                            vec![0u64; TASK_BLOCKS * stride],
                        )
                    },
                    |(r, s), (task, (((((la, lb), ea), eb), zc), mb))| {
                        let b0 = task * TASK_BLOCKS;
                        let blocks = la.len() / next_m;
                        if next_layer.is_some() {
                            prev.fill_at(sp + (b0 * stride / 2) as u64, &mut r[..blocks * stride]);
                            next_prg
                                .fill_at(sn + (b0 * stride / 2) as u64, &mut s[..blocks * stride]);
                        }
                        for i in 0..blocks {
                            let blk = b0 + i;
                            let m = cur.m;
                            let base = blk * m;
                            let za = &z[blk * count..(blk + 1) * count];
                            let zbb = &zb[8 * blk * count..8 * (blk + 1) * count];
                            let o = i * next_m..(i + 1) * next_m;
                            let (la, lb, ea, eb) = (
                                &mut la[o.clone()],
                                &mut lb[o.clone()],
                                &mut ea[o.clone()],
                                &mut eb[o],
                            );
                            for k in 0..layer.pairs {
                                la[k] = cur.less_a[base + 2 * k + 1] ^ za[k];
                                lb[k] = cur.less_b[base + 2 * k + 1] ^ word_at(zbb, k);
                            }
                            for k in 0..layer.eq_pairs {
                                ea[k] = za[layer.pairs + k];
                                eb[k] = word_at(zbb, layer.pairs + k);
                            }
                            if layer.odd {
                                let (t, f) = (layer.pairs, base + m - 1);
                                la[t] = cur.less_a[f];
                                lb[t] = cur.less_b[f];
                                ea[t] = cur.eq_a[f];
                                eb[t] = cur.eq_b[f];
                            }
                            if let Some(nl) = next_layer {
                                let rs = i * stride..i * stride + nl.count();
                                let zi = &mut zc[i * zc_len..(i + 1) * zc_len];
                                nl.and_local(nots, la, lb, ea, eb, &r[rs.clone()], &s[rs], zi);
                                words_into_bytes(zi, &mut mb[8 * i * zc_len..8 * (i + 1) * zc_len]);
                            }
                        }
                    },
                );
        }
        party.recycle_message(zb);
        let old = std::mem::replace(&mut state, next);
        for v in [old.less_a, old.less_b, old.eq_a, old.eq_b] {
            party.scratch.give_words(v);
        }
        party.scratch.give_words(std::mem::replace(&mut z, next_z));
        z.truncate(nb * next_count);
        msg = next_msg;
        msg.truncate(8 * nb * next_count);
    }
    party.scratch.give_words(z);
    party.recycle_message(msg);
    let Nodes {
        less_a,
        less_b,
        eq_a,
        eq_b,
        ..
    } = state;
    // The result (one word per block) is copied out, so that the large pooled buffers
    // stay in the pool.
    let out = Shared {
        a: less_a.to_vec(),
        b: less_b.to_vec(),
    };
    for v in [less_a, less_b, eq_a, eq_b] {
        party.scratch.give_words(v);
    }
    Ok(out)
}

/// Blocks per parallel task: enough work to amortize scheduling and to generate each
/// task's random stream in one long run.
const TASK_BLOCKS: usize = 32;

/// From this many blocks (64 comparisons each) on, a comparison in malicious mode runs as
/// a borrow chain (`less_than_ripple`): `w` AND gates per comparison instead of the
/// prefix tree's `2w - 1 - log2 w` (64 rather than 121 at 64 bits), in `w` rounds instead
/// of `1 + ceil(log2 w)`. Every AND gate is verified at about 3 ns per gate per party,
/// while a round costs tens of microseconds, so the chain pays from a few thousand
/// comparisons on; below that, and always in semi-honest mode (where an AND costs about
/// as much as the data it sends), the tree's fewer rounds win.
pub const RIPPLE_MIN_BLOCKS: usize = 64;

/// Blocks per parallel task when the borrow chain lays out its planes.
const RIPPLE_TASK_BLOCKS: usize = 256;

/// Blocks the borrow chain lays out together (8 words: one cache line per plane).
const RIPPLE_GROUP: usize = 8;

/// Words per parallel task in one link of the borrow chain (even, so that each task's
/// stream slice starts on an AES block).
const RIPPLE_TASK_WORDS: usize = 2048;

/// `[x < y]` as the borrow out of `x - y`, one bit per round from the least significant:
/// `c_0 = 0`, `c_{j+1} = maj(!x_j, y_j, c_j) = c_j ^ ((!x_j ^ c_j) & (y_j ^ c_j))`, and
/// `[x < y] = c_w`. One AND gate per bit, so `w` per comparison (the fewest for an
/// `w`-bit comparison), in `w` rounds of one word per block. Same interface and result
/// as [`less_than_blocks`], which calls it for large batches in malicious mode.
pub(crate) fn less_than_ripple<F>(
    party: &mut Party,
    nb: usize,
    w: usize,
    fill: F,
) -> Result<Shared, EngineError>
where
    F: Fn(usize, &mut [u64], &mut [u64], &mut [u64], &mut [u64]) + Sync,
{
    let [not_a, not_b] = x0_masks(party.id());
    // Plane-major shares of `!x` and `y = x ^ d`: plane `j` (most significant first) of
    // every block at `j * nb..`, so each link of the chain reads four contiguous runs.
    let mut nx_a = party.scratch.take_words(nb * w);
    let mut nx_b = party.scratch.take_words(nb * w);
    let mut y_a = party.scratch.take_words(nb * w);
    let mut y_b = party.scratch.take_words(nb * w);
    {
        let tasks = nb.div_ceil(RIPPLE_TASK_BLOCKS);
        let mut pieces: Vec<[Vec<&mut [u64]>; 4]> =
            (0..tasks).map(|_| Default::default()).collect();
        for (k, arr) in [&mut nx_a, &mut nx_b, &mut y_a, &mut y_b]
            .into_iter()
            .enumerate()
        {
            for plane in arr.chunks_mut(nb) {
                for (t, piece) in plane.chunks_mut(RIPPLE_TASK_BLOCKS).enumerate() {
                    pieces[t][k].push(piece);
                }
            }
        }
        let fill = &fill;
        // Blocks are laid out `RIPPLE_GROUP` at a time, so that each plane receives
        // whole cache lines (one copy per plane and group) rather than one word per
        // plane and block.
        pieces.into_par_iter().enumerate().for_each_init(
            || (Layer0Scratch::new(w), vec![[0u64; RIPPLE_GROUP]; 4 * w]),
            |(sc, group), (t, [mut pa, mut pb, mut qa, mut qb])| {
                let blocks = pa[0].len();
                for g0 in (0..blocks).step_by(RIPPLE_GROUP) {
                    let len = RIPPLE_GROUP.min(blocks - g0);
                    let (gpa, rest) = group.split_at_mut(w);
                    let (gpb, rest) = rest.split_at_mut(w);
                    let (gqa, gqb) = rest.split_at_mut(w);
                    for g in 0..len {
                        let (xa, xb, da, db) = (
                            &mut sc.xa[..w],
                            &mut sc.xb[..w],
                            &mut sc.da[..w],
                            &mut sc.db[..w],
                        );
                        fill(t * RIPPLE_TASK_BLOCKS + g0 + g, xa, xb, da, db);
                        for j in 0..w {
                            gpa[j][g] = xa[j] ^ not_a;
                            gpb[j][g] = xb[j] ^ not_b;
                            gqa[j][g] = xa[j] ^ da[j];
                            gqb[j][g] = xb[j] ^ db[j];
                        }
                    }
                    for (dst, src) in [
                        (&mut pa, gpa),
                        (&mut pb, gpb),
                        (&mut qa, gqa),
                        (&mut qb, gqb),
                    ] {
                        for (plane, words) in dst.iter_mut().zip(src.iter()) {
                            plane[g0..g0 + len].copy_from_slice(&words[..len]);
                        }
                    }
                }
                // In place: `Vec::zeroize` would also empty the vectors, which the next
                // task of this scratch still uses.
                for v in [&mut sc.xa, &mut sc.xb, &mut sc.da, &mut sc.db] {
                    v.as_mut_slice().zeroize();
                }
                for words in group.iter_mut() {
                    words.zeroize();
                }
            },
        );
    }
    // The borrow, and the link's AND inputs `!x_j ^ c`, `y_j ^ c` and output share.
    let mut c_a = party.scratch.take_words(nb);
    let mut c_b = party.scratch.take_words(nb);
    c_a.fill(0);
    c_b.fill(0);
    // In malicious mode each link's gates (inputs `!x_j ^ c`, `y_j ^ c`, output shares)
    // are computed straight into the verification record; otherwise into these.
    let record = party.malicious();
    let own = if record { 0 } else { nb };
    let mut local: [Words; 6] = std::array::from_fn(|_| party.scratch.take_words(own));
    for j in (0..w).rev() {
        let plane = j * nb..(j + 1) * nb;
        let (nxa, nxb, ya, yb) = (
            &nx_a[plane.clone()],
            &nx_b[plane.clone()],
            &y_a[plane.clone()],
            &y_b[plane],
        );
        let base = party.pending.len();
        let sp = party.zero.prev.reserve(nb);
        let sn = party.zero.next.reserve(nb);
        let mut msg = party.take_message(nb);
        {
            let (prev, next) = (&party.zero.prev, &party.zero.next);
            let (ca, cb) = (&c_a[..], &c_b[..]);
            let [pa, pb, qa, qb, za, _] = if record {
                party.pending.grow(nb)
            } else {
                local.each_mut().map(|v| &mut v[..])
            };
            pa.par_chunks_mut(RIPPLE_TASK_WORDS)
                .zip(pb.par_chunks_mut(RIPPLE_TASK_WORDS))
                .zip(qa.par_chunks_mut(RIPPLE_TASK_WORDS))
                .zip(qb.par_chunks_mut(RIPPLE_TASK_WORDS))
                .zip(za.par_chunks_mut(RIPPLE_TASK_WORDS))
                .zip(msg.par_chunks_mut(8 * RIPPLE_TASK_WORDS))
                .enumerate()
                .for_each(|(t, (((((pa, pb), qa), qb), zc), mb))| {
                    let o = t * RIPPLE_TASK_WORDS;
                    let len = zc.len();
                    let mut r = [0u64; RIPPLE_TASK_WORDS];
                    let mut s = [0u64; RIPPLE_TASK_WORDS];
                    prev.fill_at(sp + (o / 2) as u64, &mut r[..len]);
                    next.fill_at(sn + (o / 2) as u64, &mut s[..len]);
                    // Every operand cut to `len` first, so the loop has no bounds checks.
                    let run = o..o + len;
                    let (nxa, nxb, ya, yb) = (
                        &nxa[run.clone()],
                        &nxb[run.clone()],
                        &ya[run.clone()],
                        &yb[run.clone()],
                    );
                    let (ca, cb) = (&ca[run.clone()], &cb[run]);
                    let (pa, pb, qa, qb) = (
                        &mut pa[..len],
                        &mut pb[..len],
                        &mut qa[..len],
                        &mut qb[..len],
                    );
                    let (r, s) = (&r[..len], &s[..len]);
                    for i in 0..len {
                        pa[i] = nxa[i] ^ ca[i];
                        pb[i] = nxb[i] ^ cb[i];
                        qa[i] = ya[i] ^ ca[i];
                        qb[i] = yb[i] ^ cb[i];
                        zc[i] = and_word(pa[i], pb[i], qa[i], qb[i], r[i], s[i]);
                    }
                    words_into_bytes(zc, mb);
                });
        }
        #[cfg(feature = "fault-injection")]
        if party.corrupt_bytes(crate::fault::ComputeSite::AndGate, &mut msg) {
            if record {
                party.pending.za[base] ^= 1;
            } else {
                local[4][0] ^= 1;
            }
        }
        party.send_message(Peer::Prev, msg)?;
        let got = party.recv_message(Peer::Next, nb)?;
        {
            // The received shares complete the link's gates, and the borrow moves on:
            // c ^= z.
            let (za, zb): (&[u64], &mut [u64]) = if record {
                let g = &mut party.pending;
                (&g.za[base..base + nb], &mut g.zb[base..base + nb])
            } else {
                let [.., za, zb] = &mut local;
                (&za[..], &mut zb[..])
            };
            c_a.par_chunks_mut(RIPPLE_TASK_WORDS)
                .zip(c_b.par_chunks_mut(RIPPLE_TASK_WORDS))
                .zip(za.par_chunks(RIPPLE_TASK_WORDS))
                .zip(zb.par_chunks_mut(RIPPLE_TASK_WORDS))
                .enumerate()
                .for_each(|(t, (((ca, cb), za), zb))| {
                    let o = t * RIPPLE_TASK_WORDS;
                    for i in 0..ca.len() {
                        zb[i] = word_at(&got, o + i);
                        ca[i] ^= za[i];
                        cb[i] ^= zb[i];
                    }
                });
        }
        party.recycle_message(got);
    }
    let out = Shared {
        a: c_a.to_vec(),
        b: c_b.to_vec(),
    };
    for v in [nx_a, nx_b, y_a, y_b, c_a, c_b].into_iter().chain(local) {
        party.scratch.give_words(v);
    }
    Ok(out)
}

/// The leaves and the first prefix layer's local AND shares in one pass, for inputs
/// that differ in every lane ([`less_than_distinct_blocks`], semi-honest mode). Every
/// leaf holds `(lessval, eq) = (!x_j, !d_j)`, the least significant one too. Returns
/// the leaf nodes the first merge reads (each pair's low `lessval`, and the odd last
/// node whole; the rest of the table is left stale), the layer's AND shares and its
/// message.
fn fused_leaves<F>(party: &mut Party, nb: usize, w: usize, fill: &F) -> (Nodes, Words, Vec<u8>)
where
    F: Fn(usize, &mut [u64], &mut [u64], &mut [u64], &mut [u64]) + Sync,
{
    let nots = x0_masks(party.id());
    let [not_a, not_b] = nots;
    let layer = Layer::of(w);
    let count = layer.count();
    let stride = even(count);
    let sp = party.zero.prev.reserve(nb * stride);
    let sn = party.zero.next.reserve(nb * stride);
    let mut state = Nodes {
        m: w,
        less_a: party.scratch.take_words(nb * w),
        less_b: party.scratch.take_words(nb * w),
        eq_a: party.scratch.take_words(nb * w),
        eq_b: party.scratch.take_words(nb * w),
    };
    let mut z = party.scratch.take_words(nb * count);
    let mut msg = party.take_message(nb * count);
    {
        let (prev, next) = (&party.zero.prev, &party.zero.next);
        state
            .less_a
            .par_chunks_mut(TASK_BLOCKS * w)
            .zip(state.less_b.par_chunks_mut(TASK_BLOCKS * w))
            .zip(state.eq_a.par_chunks_mut(TASK_BLOCKS * w))
            .zip(state.eq_b.par_chunks_mut(TASK_BLOCKS * w))
            .zip(z.par_chunks_mut(TASK_BLOCKS * count))
            .zip(msg.par_chunks_mut(TASK_BLOCKS * count * 8))
            .enumerate()
            .for_each_init(
                || {
                    (
                        Layer0Scratch::new(w),
                        vec![0u64; TASK_BLOCKS * stride],
                        vec![0u64; TASK_BLOCKS * stride],
                    )
                },
                |(sc, r, s), (task, (((((la, lb), ea), eb), zt), mt))| {
                    let b0 = task * TASK_BLOCKS;
                    let blocks = zt.len() / count;
                    prev.fill_at(sp + (b0 * stride / 2) as u64, &mut r[..blocks * stride]);
                    next.fill_at(sn + (b0 * stride / 2) as u64, &mut s[..blocks * stride]);
                    for i in 0..blocks {
                        let (xa, xb, da, db) = (
                            &mut sc.xa[..w],
                            &mut sc.xb[..w],
                            &mut sc.da[..w],
                            &mut sc.db[..w],
                        );
                        fill(b0 + i, xa, xb, da, db);
                        // The leaves in place, `(lessval, eq) = (!x, !d)`, in the scratch
                        // (first-level cache), then the layer's products as every prefix
                        // layer computes them.
                        for j in 0..w {
                            xa[j] ^= not_a;
                            xb[j] ^= not_b;
                            da[j] ^= not_a;
                            db[j] ^= not_b;
                        }
                        let rs = i * stride..i * stride + count;
                        let zc = &mut zt[i * count..(i + 1) * count];
                        layer.and_local(nots, xa, xb, da, db, &r[rs.clone()], &s[rs], zc);
                        words_into_bytes(zc, &mut mt[8 * i * count..8 * (i + 1) * count]);
                        let o = i * w;
                        for k in 0..layer.pairs {
                            let l = 2 * k + 1;
                            la[o + l] = xa[l];
                            lb[o + l] = xb[l];
                        }
                        if layer.odd {
                            let f = w - 1;
                            la[o + f] = xa[f];
                            lb[o + f] = xb[f];
                            ea[o + f] = da[f];
                            eb[o + f] = db[f];
                        }
                    }
                },
            );
    }
    (state, z, msg)
}

/// Per-task working memory of layer 0 (reused across a rayon job's tasks).
struct Layer0Scratch {
    xa: Vec<u64>,
    xb: Vec<u64>,
    da: Vec<u64>,
    db: Vec<u64>,
    r: Vec<u64>,
    s: Vec<u64>,
}

impl Layer0Scratch {
    fn new(w: usize) -> Self {
        Layer0Scratch {
            xa: vec![0; w],
            xb: vec![0; w],
            da: vec![0; w],
            db: vec![0; w],
            r: vec![0; TASK_BLOCKS * 2],
            s: vec![0; TASK_BLOCKS * 2],
        }
    }
}

/// `m` (less, equal) nodes per block, block-major and compact.
struct Nodes {
    m: usize,
    less_a: Words,
    less_b: Words,
    eq_a: Words,
    eq_b: Words,
}

/// The shape of one prefix layer over `m` nodes.
#[derive(Clone, Copy)]
struct Layer {
    pairs: usize,
    eq_pairs: usize,
    odd: bool,
}

impl Layer {
    fn of(m: usize) -> Self {
        let pairs = m / 2;
        let odd = m % 2 == 1;
        // When the last pair merges into the last node, its equality is never read.
        let eq_pairs = if odd { pairs } else { pairs - 1 };
        Layer {
            pairs,
            eq_pairs,
            odd,
        }
    }

    /// AND gates per block.
    fn count(self) -> usize {
        self.pairs + self.eq_pairs
    }

    fn next_m(self) -> usize {
        self.pairs + usize::from(self.odd)
    }

    /// This party's shares of the layer's products for one block: `neq_H & (less_H ^
    /// less_L)` for each pair (`not_a`, `not_b` turn `eq` into `neq`), then `eq_H & eq_L`
    /// for the first `eq_pairs` pairs.
    #[allow(clippy::too_many_arguments)]
    fn and_local(
        self,
        [not_a, not_b]: [u64; 2],
        la: &[u64],
        lb: &[u64],
        ea: &[u64],
        eb: &[u64],
        r: &[u64],
        s: &[u64],
        z: &mut [u64],
    ) {
        for k in 0..self.pairs {
            let (h, l) = (2 * k, 2 * k + 1);
            z[k] = and_word(
                ea[h] ^ not_a,
                eb[h] ^ not_b,
                la[h] ^ la[l],
                lb[h] ^ lb[l],
                r[k],
                s[k],
            );
        }
        for k in 0..self.eq_pairs {
            let (h, l) = (2 * k, 2 * k + 1);
            let q = self.pairs + k;
            z[q] = and_word(ea[h], eb[h], ea[l], eb[l], r[q], s[q]);
        }
    }
}

/// The local AND shares of the first prefix layer over `state`.
fn prefix_and_local(
    party: &mut Party,
    state: &Nodes,
    nb: usize,
) -> Result<(Words, Vec<u8>), EngineError> {
    if state.m <= 1 {
        return Ok((party.scratch.take_words(0), party.take_message(0)));
    }
    let layer = Layer::of(state.m);
    let count = layer.count();
    let stride = even(count);
    let nots = x0_masks(party.id());
    let sp = party.zero.prev.reserve(nb * stride);
    let sn = party.zero.next.reserve(nb * stride);
    let m = state.m;
    let mut z = party.scratch.take_words(nb * count);
    let mut msg = party.take_message(nb * count);
    let (prev, next) = (&party.zero.prev, &party.zero.next);
    z.par_chunks_mut(TASK_BLOCKS * count)
        .zip(msg.par_chunks_mut(TASK_BLOCKS * count * 8))
        .enumerate()
        .for_each_init(
            || {
                (
                    vec![0u64; TASK_BLOCKS * stride],
                    vec![0u64; TASK_BLOCKS * stride],
                )
            },
            |(r, s), (task, (zt, mt))| {
                let b0 = task * TASK_BLOCKS;
                let blocks = zt.len() / count;
                prev.fill_at(sp + (b0 * stride / 2) as u64, &mut r[..blocks * stride]);
                next.fill_at(sn + (b0 * stride / 2) as u64, &mut s[..blocks * stride]);
                for (i, zc) in zt.chunks_mut(count).enumerate() {
                    let rng = (b0 + i) * m..(b0 + i + 1) * m;
                    let rs = i * stride..i * stride + count;
                    layer.and_local(
                        nots,
                        &state.less_a[rng.clone()],
                        &state.less_b[rng.clone()],
                        &state.eq_a[rng.clone()],
                        &state.eq_b[rng],
                        &r[rs.clone()],
                        &s[rs],
                        zc,
                    );
                }
                words_into_bytes(zt, mt);
            },
        );
    Ok((z, msg))
}

/// Records one prefix layer's gates over `st` for verification: per block, `neq_H &
/// (less_H ^ less_L)` for each pair, then `eq_H & eq_L` for the first `eq_pairs` pairs, with this
/// party's output shares `z` and the received ones `zb`.
fn record_prefix_layer(
    party: &mut Party,
    st: &Nodes,
    layer: Layer,
    z: &[u64],
    zb: &[u8],
    nb: usize,
) {
    let count = layer.count();
    if count == 0 {
        return;
    }
    let m = st.m;
    let [not_a, not_b] = x0_masks(party.id());
    let [xa, xb, ya, yb, za, zbo] = party.pending.grow(nb * count);
    xa.par_chunks_mut(count)
        .zip(xb.par_chunks_mut(count))
        .zip(ya.par_chunks_mut(count))
        .zip(yb.par_chunks_mut(count))
        .enumerate()
        .for_each(|(blk, (((xa, xb), ya), yb))| {
            let base = blk * m;
            for k in 0..layer.pairs {
                let (h, l) = (base + 2 * k, base + 2 * k + 1);
                xa[k] = st.eq_a[h] ^ not_a;
                xb[k] = st.eq_b[h] ^ not_b;
                ya[k] = st.less_a[h] ^ st.less_a[l];
                yb[k] = st.less_b[h] ^ st.less_b[l];
            }
            for k in 0..layer.eq_pairs {
                let (h, l, q) = (base + 2 * k, base + 2 * k + 1, layer.pairs + k);
                xa[q] = st.eq_a[h];
                xb[q] = st.eq_b[h];
                ya[q] = st.eq_a[l];
                yb[q] = st.eq_b[l];
            }
        });
    za.copy_from_slice(&z[..nb * count]);
    bytes_into_words(&zb[..8 * nb * count], zbo);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::share::reconstruct;
    use crate::testing::run_three;
    use crate::transpose::rows_to_planes;
    use crate::SecurityMode;

    /// The borrow chain on its own, in both modes (the dispatch sends it only malicious
    /// batches), against plaintext: random keys, equal pairs, pairs one bit apart.
    #[test]
    fn the_borrow_chain_matches_plaintext_in_both_modes() {
        let (nb, w) = (3usize, 11usize);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state & ((1 << w) - 1)
        };
        let xs: Vec<u64> = (0..64 * nb).map(|_| next()).collect();
        let mut ys: Vec<u64> = (0..64 * nb).map(|_| next()).collect();
        for k in (0..ys.len()).step_by(5) {
            ys[k] = xs[k];
        }
        for k in (2..ys.len()).step_by(7) {
            ys[k] = xs[k] ^ 1;
        }
        // Plane-major, most significant first: plane `j` of block `blk` at `j * nb + blk`.
        let planes =
            |v: &[u64]| rows_to_planes(&v.iter().map(|&x| x as u128).collect::<Vec<_>>(), w);
        let x = planes(&xs);
        let d: Vec<u64> = x.iter().zip(planes(&ys)).map(|(a, b)| a ^ b).collect();
        for mode in [SecurityMode::SemiHonest, SecurityMode::Malicious] {
            let (x, d) = (x.clone(), d.clone());
            let out = run_three(move |p| {
                p.set_security(mode)?;
                let (xs, ds) = (Shared::public(p.id(), &x), Shared::public(p.id(), &d));
                let lt = less_than_ripple(p, nb, w, |blk, xa, xb, da, db| {
                    for j in 0..w {
                        let at = j * nb + blk;
                        (xa[j], xb[j]) = (xs.a[at], xs.b[at]);
                        (da[j], db[j]) = (ds.a[at], ds.b[at]);
                    }
                })?;
                let recorded = p.pending_gate_words();
                p.verify_pending()?;
                Ok((lt, recorded))
            });
            let r: Vec<&(Shared, usize)> = out
                .iter()
                .map(|r| r.as_ref().expect("party failed"))
                .collect();
            let lt = reconstruct([&r[0].0, &r[1].0, &r[2].0]);
            for k in 0..xs.len() {
                let got = (lt[k / 64] >> (k % 64)) & 1 == 1;
                assert_eq!(got, xs[k] < ys[k], "{mode}: lane {k}");
            }
            let want = if mode == SecurityMode::Malicious {
                w * nb
            } else {
                0
            };
            assert_eq!(r[0].1, want, "{mode}: gates recorded");
        }
    }
}
