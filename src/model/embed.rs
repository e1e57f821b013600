//! The token-embedding lookup, with a backward that can leave the table's gradient to the
//! caller.
//!
//! candle's `index_select` backward builds the table's gradient in a fresh zero tensor the
//! size of the whole table (`[R·V, d]`, 17 MB per replica at the `seed` preset), which it
//! first copies, then adds each looked-up row's gradient into; the gradient store then
//! adds that to another zero tensor, and the training loop adds the sum to the output
//! layer's ∂E: five passes over the table per step, mostly on one thread, for a gradient
//! that has at most `B·T` non-zero rows. [`lookup_deferred`] keeps the rows' gradients
//! instead, and [`DeferredLookupGrad::add_into`] adds them into ∂E in place, with candle's
//! additions in candle's order (bit-identical, tested here and in `tests/engine.rs`).

use super::kernels::contiguous;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// The looked-up rows' gradient, as one backward left it.
struct RowGrads {
    /// Row ids `[R, M]`, each below V.
    ids: Vec<u32>,
    /// ∂rows `[R, M, d]`.
    rows: Vec<f32>,
    dims: (usize, usize, usize, usize), // R, M, V, d
}

type Slot = Arc<Mutex<Option<RowGrads>>>;

/// Rows `ids` `[R, M]` (u32, each below V) of each replica's table `[R, V, d]`: `[R, M, d]`,
/// the values of `index_select` on the flattened table. When the table is a contiguous
/// f32 variable on the CPU, the backward gives it no gradient through candle: the returned
/// [`DeferredLookupGrad`] holds it, to be added with [`DeferredLookupGrad::add_into`] after
/// the backward. Otherwise it is candle's `index_select`, whose gradient candle accumulates
/// as usual (and [`DeferredLookupGrad::pending`] stays false).
pub fn lookup_deferred(table: &Tensor, ids: &Tensor) -> Result<(Tensor, DeferredLookupGrad)> {
    let r = table.dim(0)?;
    let r2 = ids.dim(0)?;
    ids.dims2()?;
    if r2 != r {
        candle_core::bail!("lookup: {r2} replicas of ids for a table of {r}");
    }
    // Only a stored parameter, read in place: a table computed from something else (or
    // made contiguous by a copy) needs its gradient from candle to reach what it came from.
    if table.device().is_cpu()
        && table.dtype() == DType::F32
        && table.is_variable()
        && table.is_contiguous()
    {
        let slot: Slot = Arc::new(Mutex::new(None));
        let op = Lookup {
            slot: Arc::clone(&slot),
        };
        let rows = table.contiguous()?.apply_op2(&ids.contiguous()?, op)?;
        return Ok((rows, DeferredLookupGrad { slot: Some(slot) }));
    }
    Ok((lookup(table, ids)?, DeferredLookupGrad { slot: None }))
}

/// [`lookup_deferred`]'s rows through candle's `index_select` on the flattened table
/// (replica i's row `id` is row `i·V + id`), whose gradient candle accumulates.
/// An id of V or more is an error, as in [`lookup_deferred`] (the flattened table would
/// otherwise read it from the next replica's rows without a word).
pub fn lookup(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (r, v, d) = table.dims3()?;
    let (_, m) = ids.dims2()?;
    if m > 0 {
        check_ids(ids.flatten_all()?.max(0)?.to_scalar::<u32>()?, v)?;
    }
    let offsets = Tensor::arange(0u32, r as u32, ids.device())?
        .affine(v as f64, 0.0)?
        .reshape((r, 1))?;
    let flat = ids.broadcast_add(&offsets)?.flatten_all()?;
    table
        .reshape((r * v, d))?
        .index_select(&flat, 0)?
        .reshape((r, m, d))
}

/// An error unless `max`, the largest id, is below the vocabulary size `v`.
fn check_ids(max: u32, v: usize) -> Result<()> {
    if max as usize >= v {
        candle_core::bail!(
            "token id {max} is out of range for a vocabulary of {v} (ids must be below it)"
        );
    }
    Ok(())
}

struct Lookup {
    slot: Slot,
}

impl CustomOp2 for Lookup {
    fn name(&self) -> &'static str {
        "token-lookup"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (r, v, d) = l1.shape().dims3()?;
        let (_, m) = l2.shape().dims2()?;
        let table = contiguous::<f32>(s1, l1)?;
        let ids = contiguous::<u32>(s2, l2)?;
        check_ids(ids.iter().copied().max().unwrap_or(0), v)?;
        let mut out = Vec::with_capacity(r * m * d);
        for (k, &id) in ids.iter().enumerate() {
            let row = (k / m) * v + id as usize;
            out.extend_from_slice(&table[row * d..(row + 1) * d]);
        }
        Ok((CpuStorage::F32(out), Shape::from((r, m, d))))
    }

    fn bwd(
        &self,
        table: &Tensor,
        ids: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (r, v, d) = table.dims3()?;
        let m = ids.dim(1)?;
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            candle_core::bail!(
                "token lookup: a second backward before the first one's gradient was added"
            );
        }
        *slot = Some(RowGrads {
            ids: ids.flatten_all()?.to_vec1()?,
            rows: grad.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
            dims: (r, m, v, d),
        });
        Ok((None, None))
    }
}

/// The table's gradient that a [`lookup_deferred`] backward left out of candle's.
#[derive(Default)]
pub struct DeferredLookupGrad {
    slot: Option<Slot>,
}

impl DeferredLookupGrad {
    /// Whether a backward left a gradient that [`Self::add_into`] has not added yet.
    pub fn pending(&self) -> bool {
        self.slot
            .as_ref()
            .is_some_and(|s| s.lock().unwrap_or_else(|e| e.into_inner()).is_some())
    }

    /// Adds the looked-up rows' gradient to `grad` (`[R, V, d]`, row-major) as candle's
    /// `index_select` backward and gradient store would have: each table row's share is its
    /// rows' gradients summed from +0 in the order of their positions, then added to
    /// `grad`'s row. (Rows that no id looked up get +0, which candle adds too: the output
    /// layer's ∂E pieces add it already, see `lm_head`.) `Ok(false)`, leaving `grad` as it
    /// was, when there is nothing to add: no backward ran, or the lookup went through
    /// candle.
    pub fn add_into(&self, grad: &mut [f32]) -> Result<bool> {
        let Some(slot) = &self.slot else {
            return Ok(false);
        };
        let Some(g) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(false);
        };
        let (r, m, v, d) = g.dims;
        if grad.len() != r * v * d {
            candle_core::bail!(
                "lookup gradient: {} values for a [{r}, {v}, {d}] table",
                grad.len()
            );
        }
        // first position's slot of each id, per replica; sums in a compact buffer
        let mut slot_of = vec![u32::MAX; v];
        let mut sums: Vec<f32> = Vec::with_capacity(m * d);
        let mut order: Vec<usize> = Vec::with_capacity(m);
        for i in 0..r {
            sums.clear();
            order.clear();
            for j in 0..m {
                let id = g.ids[i * m + j] as usize;
                let src = &g.rows[(i * m + j) * d..(i * m + j + 1) * d];
                let s = match slot_of[id] {
                    u32::MAX => {
                        slot_of[id] = order.len() as u32;
                        order.push(id);
                        sums.extend(std::iter::repeat_n(0f32, d));
                        sums.len() - d
                    }
                    k => k as usize * d,
                };
                for (a, &x) in sums[s..s + d].iter_mut().zip(src) {
                    *a += x;
                }
            }
            for (k, &id) in order.iter().enumerate() {
                let dst = &mut grad[(i * v + id) * d..(i * v + id + 1) * d];
                for (y, &a) in dst.iter_mut().zip(&sums[k * d..(k + 1) * d]) {
                    *y += a; // IEEE addition commutes: the bits of candle's `a + y`
                }
                slot_of[id] = u32::MAX;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Deterministic values in [−3.7, 3.7], a different sequence per `salt`.
    fn fixed(shape: (usize, usize, usize), salt: usize, dev: &Device) -> Tensor {
        let n = shape.0 * shape.1 * shape.2;
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 + salt * 104_729) % 97) as f32 / 13.0 - 3.7)
            .collect();
        Tensor::from_vec(v, shape, dev).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Values as `index_select`'s, and the table's gradient, once added to another
    /// gradient of the table, as candle's: repeated ids (summed in position order), rows
    /// nobody looked up, and a −0 in the other gradient (candle's zero tensor turns it into
    /// +0; here the caller's ∂E pieces do, so this test adds +0 itself).
    #[test]
    fn lookup_gradient_is_bit_identical_to_index_select() {
        let dev = Device::Cpu;
        let (r, v, d, m) = (2, 11, 5, 9);
        let table = Var::from_tensor(&fixed((r, v, d), 1, &dev)).unwrap();
        let ids: Vec<u32> = vec![3, 1, 3, 3, 0, 10, 1, 3, 7, 2, 2, 2, 9, 0, 2, 5, 2, 9];
        let ids = Tensor::from_vec(ids, (r, m), &dev).unwrap();
        // a second use of the table, as the output layer's ∂E would be
        let other = fixed((r, v, d), 2, &dev);
        let mut other_v: Vec<f32> = other.flatten_all().unwrap().to_vec1().unwrap();
        other_v[7] = -0.0; // row 1 of replica 0: looked up
        other_v[4 * d + 1] = -0.0; // row 4 of replica 0: not looked up
        let other = Tensor::from_vec(other_v.clone(), (r, v, d), &dev).unwrap();
        // weights that make the rows' gradients differ in every entry; id 3 of replica 0
        // (positions 0, 2, 3, 7) gets 1e8, 1, −1e8, 1 in its first column, which sum to 1 in
        // position order (1e8 + 1 rounds to 1e8) and to other values in most other orders
        let mut w_v: Vec<f32> = fixed((r, m, d), 3, &dev)
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (pos, x) in [(0, 1e8f32), (2, 1.0), (3, -1e8), (7, 1.0)] {
            w_v[pos * d] = x;
        }
        let w = Tensor::from_vec(w_v, (r, m, d), &dev).unwrap();

        let (rows, deferred) = lookup_deferred(table.as_tensor(), &ids).unwrap();
        let plain = lookup(table.as_tensor(), &ids).unwrap();
        // replica 1's first row is row v + 2 of the flattened table
        let flat = table.as_tensor().reshape((r * v, d)).unwrap();
        assert_eq!(
            bits(&plain.get(1).unwrap().get(0).unwrap()),
            bits(&flat.get(v + 2).unwrap())
        );
        assert_eq!(bits(&rows), bits(&plain), "values");

        let want = (plain * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let want = (want.get(&table).unwrap() + &other).unwrap();
        let got = (rows * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(
            got.get(&table).is_none(),
            "the gradient went through candle"
        );
        let mut sum: Vec<f32> = other_v.iter().map(|x| x + 0.0).collect();
        assert!(deferred.add_into(&mut sum).unwrap());
        assert_eq!(
            sum.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            bits(&want)
        );
        // taken: a second call adds nothing
        assert!(!deferred.add_into(&mut sum).unwrap());
    }

    #[test]
    fn out_of_range_id_is_an_error() {
        let dev = Device::Cpu;
        // two replicas: id 4 of replica 0 would be a row of the flattened table (replica 1's
        // row 0)
        let table = Var::zeros((2, 4, 3), DType::F32, &dev).unwrap();
        let ids = Tensor::from_vec(vec![0u32, 4, 1, 2], (2, 2), &dev).unwrap();
        let err = match lookup_deferred(table.as_tensor(), &ids) {
            Ok(_) => panic!("an id of 4 in a table of 4 rows was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("out of range"), "{err}");
        let err = lookup(table.as_tensor(), &ids).unwrap_err().to_string();
        assert!(err.contains("out of range"), "candle's path: {err}");
    }

    /// A table that is not a stored parameter (here one computed from a variable) takes
    /// candle's path, so its gradient reaches the variable through candle.
    #[test]
    fn a_computed_table_keeps_candles_gradient() {
        let dev = Device::Cpu;
        let base = Var::from_tensor(&fixed((1, 4, 3), 4, &dev)).unwrap();
        let ids = Tensor::from_vec(vec![1u32, 1, 3], (1, 3), &dev).unwrap();
        for table in [
            base.as_tensor().affine(2.0, 0.0).unwrap(),
            base.as_tensor()
                .transpose(1, 2)
                .unwrap()
                .transpose(1, 2)
                .unwrap(),
        ] {
            let (rows, deferred) = lookup_deferred(&table, &ids).unwrap();
            let g = rows.sum_all().unwrap().backward().unwrap();
            assert!(!deferred.pending());
            let got = g.get(&base).expect("the gradient reached the variable");
            let want = lookup(&table, &ids)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert_eq!(bits(got), bits(want.get(&base).unwrap()));
        }
    }

    /// Without a backward there is nothing to add.
    #[test]
    fn nothing_to_add_without_a_backward() {
        let dev = Device::Cpu;
        let table = Var::ones((1, 4, 3), DType::F32, &dev).unwrap();
        let ids = Tensor::from_vec(vec![0u32, 3], (1, 2), &dev).unwrap();
        let (rows, deferred) = lookup_deferred(table.as_tensor(), &ids).unwrap();
        assert_eq!(rows.dims(), &[1, 2, 3]);
        let mut g = vec![1f32; 12];
        assert!(!deferred.add_into(&mut g).unwrap());
        assert_eq!(g, vec![1f32; 12]);
    }
}
