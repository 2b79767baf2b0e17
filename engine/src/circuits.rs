//! Batched boolean circuits over bitsliced shares: comparison, equality, multiplexer.
//!
//! Inputs are `w` planes in the plane-major layout of [`crate::transpose`] (plane 0 is
//! the most significant bit), `blocks` words per plane. Each circuit evaluates all
//! elements of the batch at once, so its communication rounds equal its AND-depth,
//! whatever the batch size.

use crate::compare::less_than_blocks;
use crate::error::EngineError;
use crate::party::Party;
use crate::share::Shared;

fn check_planes(x: &Shared, w: usize, blocks: usize) -> Result<(), EngineError> {
    if x.len() != w * blocks {
        return Err(EngineError::InvalidInput(format!(
            "{} words is not {w} planes of {blocks} words",
            x.len()
        )));
    }
    Ok(())
}

/// `[x < y]` (unsigned) for every element, given `x` and `d = x ^ y` in plane-major
/// layout. About `2w` AND gates in `1 + ceil(log2 w)` rounds, or in malicious mode for
/// large batches `w` gates in `w` rounds; see [`crate::compare`].
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
    less_than_blocks(party, blocks, w, |blk, xa, xb, da, db| {
        for j in 0..w {
            let at = j * blocks + blk;
            xa[j] = x.a[at];
            xb[j] = x.b[at];
            da[j] = d.a[at];
            db[j] = d.b[at];
        }
    })
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
    let mut eq = x.xor(y);
    eq.not_assign(party.id());
    // Each layer ANDs the first half of the planes with the second (contiguous slices,
    // no copies); an odd plane out waits for the next layer.
    let mut m = w;
    while m > 1 {
        let pairs = m / 2;
        let half = pairs * blocks;
        let mut next = party.and_slices(
            (&eq.a[..half], &eq.b[..half]),
            (&eq.a[half..2 * half], &eq.b[half..2 * half]),
        )?;
        if m % 2 == 1 {
            let odd = 2 * half..2 * half + blocks;
            next.a.extend_from_slice(&eq.a[odd.clone()]);
            next.b.extend_from_slice(&eq.b[odd]);
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
