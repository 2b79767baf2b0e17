//! Batched boolean circuits over bitsliced shares: comparison, equality, multiplexer.
//!
//! Inputs are `w` planes in the plane-major layout of [`crate::transpose`] (plane 0 is
//! the most significant bit), `blocks` words per plane. Each circuit evaluates all
//! elements of the batch at once, so its communication rounds equal its AND-depth,
//! whatever the batch size.

use crate::error::EngineError;
use crate::party::Party;
use crate::share::Shared;

/// Plane `j` of a plane-major share.
fn plane(s: &Shared, j: usize, blocks: usize) -> (&[u64], &[u64]) {
    (
        &s.a[j * blocks..(j + 1) * blocks],
        &s.b[j * blocks..(j + 1) * blocks],
    )
}

fn push_plane(dst: &mut Shared, src: &Shared, j: usize, blocks: usize) {
    let (a, b) = plane(src, j, blocks);
    dst.a.extend_from_slice(a);
    dst.b.extend_from_slice(b);
}

fn check_planes(x: &Shared, w: usize, blocks: usize) -> Result<(), EngineError> {
    if x.len() != w * blocks {
        return Err(EngineError::InvalidInput(format!(
            "{} words is not {w} planes of {blocks} words",
            x.len()
        )));
    }
    Ok(())
}

/// `[x < y]` (unsigned) for every element, given `x` and `d = x ^ y`.
///
/// Per bit, `x_j < y_j` is `!x_j & d_j` and equality is `!d_j` (free); a log-depth
/// prefix tree then combines (less, equal) pairs from the most significant end:
/// `less = less_H ^ (eq_H & less_L)`, `eq = eq_H & eq_L`. About `3w` AND gates and
/// `1 + ceil(log2 w)` rounds. The equality of the least significant group is never
/// needed, so it is not computed.
pub fn less_than_from_diff(
    party: &mut Party,
    x: &Shared,
    d: &Shared,
    w: usize,
    blocks: usize,
) -> Result<Shared, EngineError> {
    check_planes(x, w, blocks)?;
    check_planes(d, w, blocks)?;
    if w == 0 {
        return Ok(Shared::zeros(blocks));
    }
    let id = party.id();
    let mut less = party.and(&x.not(id), d)?;
    let mut eq = d.not(id);
    let mut m = w;
    while m > 1 {
        let pairs = m / 2;
        let odd = m % 2 == 1;
        // The least significant node is never the high half of a merge, so its
        // equality is never read: when the last pair merges into the last node, skip it.
        let eq_pairs = if odd { pairs } else { pairs - 1 };
        let mut xs = Shared::default();
        let mut ys = Shared::default();
        for k in 0..pairs {
            push_plane(&mut xs, &eq, 2 * k, blocks);
            push_plane(&mut ys, &less, 2 * k + 1, blocks);
        }
        for k in 0..eq_pairs {
            push_plane(&mut xs, &eq, 2 * k, blocks);
            push_plane(&mut ys, &eq, 2 * k + 1, blocks);
        }
        let prod = party.and(&xs, &ys)?;
        let next_m = pairs + usize::from(odd);
        let mut next_less = Shared::default();
        let mut next_eq = Shared::default();
        for k in 0..pairs {
            let (la, lb) = plane(&less, 2 * k, blocks);
            let (pa, pb) = plane(&prod, k, blocks);
            next_less.a.extend(la.iter().zip(pa).map(|(x, y)| x ^ y));
            next_less.b.extend(lb.iter().zip(pb).map(|(x, y)| x ^ y));
        }
        for k in 0..eq_pairs {
            push_plane(&mut next_eq, &prod, pairs + k, blocks);
        }
        if odd {
            push_plane(&mut next_less, &less, m - 1, blocks);
            push_plane(&mut next_eq, &eq, m - 1, blocks);
        } else {
            // The last merged node is the least significant: its equality is never
            // read, so a zero placeholder keeps the plane indices aligned.
            next_eq.extend(&Shared::zeros(blocks));
        }
        debug_assert_eq!(next_less.len(), next_m * blocks);
        less = next_less;
        eq = next_eq;
        m = next_m;
    }
    Ok(less)
}

/// `[x < y]` (unsigned) for every element.
pub fn less_than(
    party: &mut Party,
    x: &Shared,
    y: &Shared,
    w: usize,
    blocks: usize,
) -> Result<Shared, EngineError> {
    check_planes(y, w, blocks)?;
    let d = x.xor(y);
    less_than_from_diff(party, x, &d, w, blocks)
}

/// `[x == y]` for every element: an AND tree over `!(x_j ^ y_j)`; `w - 1` gates and
/// `ceil(log2 w)` rounds.
pub fn equal(
    party: &mut Party,
    x: &Shared,
    y: &Shared,
    w: usize,
    blocks: usize,
) -> Result<Shared, EngineError> {
    check_planes(x, w, blocks)?;
    check_planes(y, w, blocks)?;
    if w == 0 {
        let mut one = Shared::zeros(blocks);
        one.not_assign(party.id());
        return Ok(one);
    }
    let mut eq = x.xor(y).not(party.id());
    let mut m = w;
    while m > 1 {
        let pairs = m / 2;
        let mut xs = Shared::default();
        let mut ys = Shared::default();
        for k in 0..pairs {
            push_plane(&mut xs, &eq, 2 * k, blocks);
            push_plane(&mut ys, &eq, 2 * k + 1, blocks);
        }
        let mut next = party.and(&xs, &ys)?;
        if m % 2 == 1 {
            push_plane(&mut next, &eq, m - 1, blocks);
        }
        eq = next;
        m = pairs + m % 2;
    }
    Ok(eq)
}

/// `c ? y : x` word by word (`c` all-ones or all-zeros per lane in each word position):
/// `x ^ (c & (x ^ y))`, one AND per bit, one round.
pub fn mux(party: &mut Party, c: &Shared, x: &Shared, y: &Shared) -> Result<Shared, EngineError> {
    let mut out = party.and(c, &x.xor(y))?;
    out.xor_assign(x);
    Ok(out)
}

/// Repeats each of the `blocks` words of `c` once per plane, so a per-element bit can
/// select across `w` planes.
pub fn broadcast_planes(c: &Shared, w: usize) -> Shared {
    let mut out = Shared::default();
    for _ in 0..w {
        out.extend(c);
    }
    out
}
