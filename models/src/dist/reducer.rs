//! The DDP gradient all-reduce (PyTorch's `Reducer`, on the CPU).
//!
//! One optimiser step of a data-parallel run: the last micro-batch's backward reports each
//! parameter as its gradient becomes final ([`Tensor::backward_with_hook`]); when every
//! parameter of the next bucket (in [`BucketPlan`] order) is final, its gradients are copied into
//! that bucket's buffer and handed to the communication thread, which all-reduces it (mean over
//! the ranks) while backward goes on with the earlier layers. Buckets are always launched in
//! index order, on every rank, whatever order gradients arrive in: engines match collectives by
//! call order. [`Reducer::finish`] launches what is left (a parameter that got no gradient counts
//! as zeros), waits for every bucket and writes the averaged gradients back into `.grad()`.
//!
//! The bucket buffers are the one extra copy of the gradients (PyTorch without
//! `gradient_as_bucket_view`); they are reused from step to step.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use bitgrad_engine::{CpuStorage, DType, Storage, Tensor, TensorId};

use super::{BucketPlan, Collectives, ReduceOp};
use crate::{Error, Result};

struct Job {
    bucket: usize,
    data: Vec<f32>,
}

struct Done {
    bucket: usize,
    data: Vec<f32>,
    result: Result<()>,
    start: Instant,
    end: Instant,
}

/// What the reducer measured, summed over the steps that communicated.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReducerStats {
    pub steps: u64,
    /// Gradient bytes all-reduced per step (each rank's buffer; a ring all-reduce sends about
    /// 2·(W−1)/W times this per rank).
    pub bytes_per_step: usize,
    pub buckets: usize,
    /// Time the communication thread spent in all-reduce calls.
    pub comm_seconds: f64,
    /// The part of it that ran before backward had finished (hidden behind computation).
    pub hidden_seconds: f64,
    /// Time `finish` waited for communication after backward.
    pub wait_seconds: f64,
}

impl ReducerStats {
    /// The fraction of all-reduce time that overlapped backward.
    pub fn hidden_fraction(&self) -> f64 {
        if self.comm_seconds > 0.0 {
            self.hidden_seconds / self.comm_seconds
        } else {
            0.0
        }
    }
}

/// Bucketed, overlapped gradient averaging over the ranks of `comm` (see the module docs).
pub struct Reducer {
    plan: BucketPlan,
    params: Vec<Tensor>,
    slot: HashMap<TensorId, usize>,
    bucket_of: Vec<usize>,
    /// Per bucket: parameters whose gradient is not final yet in this step.
    missing: Vec<usize>,
    ready: Vec<bool>,
    next: usize,
    buffers: Vec<Option<Vec<f32>>>,
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
    stats: ReducerStats,
}

impl Reducer {
    /// A reducer for `params` (f32, in the model's order) over `comm`; starts the communication
    /// thread.
    pub fn new(comm: Arc<dyn Collectives>, params: &[Tensor]) -> Result<Reducer> {
        if let Some(p) = params.iter().find(|p| p.dtype() != DType::F32) {
            return Err(Error::Msg(format!("data-parallel training needs f32 parameters, found {}", p.dtype())));
        }
        let sizes: Vec<usize> = params.iter().map(Tensor::numel).collect();
        let plan = BucketPlan::new(&sizes);
        let mut bucket_of = vec![0; params.len()];
        for (b, bucket) in plan.buckets.iter().enumerate() {
            for &i in &bucket.params {
                bucket_of[i] = b;
            }
        }
        let (jobs, inbox) = channel::<Job>();
        let (outbox, done) = channel::<Done>();
        let thread = std::thread::Builder::new()
            .name("bitgrad-allreduce".into())
            .spawn(move || {
                for Job { bucket, mut data } in inbox {
                    let start = Instant::now();
                    let result = comm.all_reduce(&mut data, ReduceOp::Avg);
                    let end = Instant::now();
                    if outbox.send(Done { bucket, data, result, start, end }).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Msg(format!("cannot start the communication thread: {e}")))?;
        let stats = ReducerStats { buckets: plan.buckets.len(), bytes_per_step: plan.bytes(), ..Default::default() };
        Ok(Reducer {
            missing: plan.buckets.iter().map(|b| b.params.len()).collect(),
            ready: vec![false; params.len()],
            buffers: plan.buckets.iter().map(|b| Some(Vec::with_capacity(b.len))).collect(),
            slot: params.iter().enumerate().map(|(i, p)| (p.id(), i)).collect(),
            params: params.to_vec(),
            bucket_of,
            plan,
            next: 0,
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            stats,
        })
    }

    pub fn plan(&self) -> &BucketPlan {
        &self.plan
    }
    pub fn stats(&self) -> ReducerStats {
        self.stats
    }

    /// Backward's report that `leaf`'s gradient is final: launches every bucket that is now
    /// complete and next in order. Leaves that are not parameters are ignored.
    pub fn grad_ready(&mut self, leaf: &Tensor) -> Result<()> {
        let Some(&i) = self.slot.get(&leaf.id()) else { return Ok(()) };
        if !std::mem::replace(&mut self.ready[i], true) {
            self.missing[self.bucket_of[i]] -= 1;
        }
        while self.next < self.plan.buckets.len() && self.missing[self.next] == 0 {
            self.launch(self.next)?;
            self.next += 1;
        }
        Ok(())
    }

    /// Copies bucket `b`'s gradients (zeros for a parameter without one) into its buffer and
    /// hands it to the communication thread.
    fn launch(&mut self, b: usize) -> Result<()> {
        let mut data = self.buffers[b].take().unwrap_or_default();
        data.clear();
        for &i in &self.plan.buckets[b].params {
            let p = &self.params[i];
            match p.grad() {
                Some(g) => data.extend(g.to_vec::<f32>()?),
                None => data.resize(data.len() + p.numel(), 0.0),
            }
        }
        let jobs = self.jobs.as_ref().ok_or_else(|| Error::Msg("the communication thread has stopped".into()))?;
        jobs.send(Job { bucket: b, data }).map_err(|_| Error::Msg("the communication thread has stopped".into()))
    }

    /// Ends the step's communication: launches the remaining buckets, waits for all of them and
    /// replaces every parameter's `.grad()` by the mean over the ranks.
    pub fn finish(&mut self) -> Result<()> {
        let backward_end = Instant::now();
        while self.next < self.plan.buckets.len() {
            self.launch(self.next)?;
            self.next += 1;
        }
        let mut first_error = None;
        for _ in 0..self.plan.buckets.len() {
            let d = self.done.recv().map_err(|_| Error::Msg("the communication thread died".into()))?;
            let secs = (d.end - d.start).as_secs_f64();
            self.stats.comm_seconds += secs;
            self.stats.hidden_seconds += backward_end.saturating_duration_since(d.start).as_secs_f64().min(secs);
            if let Err(e) = d.result {
                first_error.get_or_insert(e);
            } else {
                let bucket = &self.plan.buckets[d.bucket];
                let mut at = 0;
                for &i in &bucket.params {
                    let p = &self.params[i];
                    let n = p.numel();
                    let g = Tensor::from_vec(d.data[at..at + n].to_vec(), p.shape().clone(), p.device())?;
                    p.set_grad(Some(g))?;
                    at += n;
                }
            }
            self.buffers[d.bucket] = Some(d.data);
        }
        self.stats.wait_seconds += backward_end.elapsed().as_secs_f64();
        self.stats.steps += 1;
        self.next = 0;
        self.ready.iter_mut().for_each(|r| *r = false);
        for (b, bucket) in self.plan.buckets.iter().enumerate() {
            self.missing[b] = bucket.params.len();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Reducer {
    fn drop(&mut self) {
        // Closing the job channel ends the thread's loop.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Replaces the values of `t` (an f32 tensor owning its whole, contiguous storage) by `data`.
pub fn write_f32(t: &Tensor, data: &[f32]) -> Result<()> {
    if t.numel() != data.len() || !t.is_contiguous() || t.layout().offset() != 0 || t.storage().len() != t.numel() {
        return Err(Error::Msg(format!("cannot overwrite a tensor of shape {} in place", t.shape())));
    }
    let mut storage = t.storage_mut();
    match &mut *storage {
        Storage::Cpu(CpuStorage::F32(v)) => v.copy_from_slice(data),
        Storage::Gpu(g) => {
            let fresh = bitgrad_engine::GpuStorage::from_cpu(g.runtime(), &CpuStorage::F32(data.to_vec()))?;
            *g = fresh;
        }
        other => return Err(Error::Msg(format!("cannot overwrite {} storage with f32 values", other.dtype()))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::Single;
    use bitgrad_engine::Device;

    /// Over a world of one the reducer leaves gradients as they were (mean over one rank), fills
    /// a missing gradient with zeros, and its stats count the step.
    #[test]
    fn single_rank_reduction_keeps_gradients() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0], [2], Device::Cpu).unwrap().requires_grad_(true);
        let b = Tensor::from_vec(vec![3.0f32; 3], [3], Device::Cpu).unwrap().requires_grad_(true);
        let loss = a.mul_scalar(2.0).unwrap().sum_all().unwrap();
        let mut r = Reducer::new(Arc::new(Single), &[a.clone(), b.clone()]).unwrap();
        loss.backward_with_hook(&mut |leaf| {
            r.grad_ready(leaf).map_err(|e| bitgrad_engine::Error::Autograd(e.to_string()))
        })
        .unwrap();
        r.finish().unwrap();
        assert_eq!(a.grad().unwrap().to_vec::<f32>().unwrap(), vec![2.0, 2.0]);
        assert_eq!(b.grad().unwrap().to_vec::<f32>().unwrap(), vec![0.0; 3]);
        let s = r.stats();
        assert_eq!((s.steps, s.buckets, s.bytes_per_step), (1, 1, 20));
        write_f32(&b, &[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(b.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
        assert!(write_f32(&b, &[1.0]).is_err());
    }
}
