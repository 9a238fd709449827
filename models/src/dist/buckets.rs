//! The gradient bucket plan, as PyTorch's DDP makes it: parameters in *reverse* order (backward
//! produces the last layers' gradients first), packed into buckets that close once they reach
//! their cap — 1 MiB for the first bucket (so communication starts early), 25 MiB after. A
//! parameter is never split, so a bucket can exceed its cap by its last parameter. The flat
//! gradient buffer is laid out in this order, so every bucket is one contiguous slice of it.

/// One bucket: a contiguous range of the flat buffer holding whole parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Parameter indices (in the model's order), as laid out in the bucket.
    pub params: Vec<usize>,
    /// Offset and length in the flat buffer, in elements.
    pub offset: usize,
    pub len: usize,
}

/// Every parameter in exactly one bucket, buckets in the order they are reduced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPlan {
    pub buckets: Vec<Bucket>,
    /// Elements in all buckets together.
    pub total: usize,
}

/// PyTorch DDP's `kDefaultFirstBucketBytes`.
pub const FIRST_BUCKET_BYTES: usize = 1 << 20;
/// PyTorch DDP's `bucket_cap_mb=25`.
pub const BUCKET_BYTES: usize = 25 << 20;

impl BucketPlan {
    /// The plan for f32 parameters of `sizes` elements (in the model's order) with DDP's caps.
    pub fn new(sizes: &[usize]) -> BucketPlan {
        BucketPlan::with_caps(sizes, FIRST_BUCKET_BYTES, BUCKET_BYTES)
    }

    /// The plan with explicit caps in bytes (f32 elements are 4 bytes).
    pub fn with_caps(sizes: &[usize], first_cap: usize, cap: usize) -> BucketPlan {
        let mut buckets = Vec::new();
        let mut current = Bucket { params: Vec::new(), offset: 0, len: 0 };
        for i in (0..sizes.len()).rev() {
            current.params.push(i);
            current.len += sizes[i];
            let limit = if buckets.is_empty() { first_cap } else { cap };
            if current.len * 4 >= limit {
                let offset = current.offset + current.len;
                buckets.push(std::mem::replace(&mut current, Bucket { params: Vec::new(), offset, len: 0 }));
            }
        }
        if !current.params.is_empty() {
            buckets.push(current);
        }
        let total = sizes.iter().sum();
        BucketPlan { buckets, total }
    }

    /// Bytes of one full all-reduce of the plan (f32).
    pub fn bytes(&self) -> usize {
        self.total * 4
    }

    /// One line per bucket: index, parameters, size in MiB and the first and last parameter's
    /// name (for docs and `bitgrad info --buckets`).
    pub fn describe(&self, names: &[String]) -> String {
        let mut s = format!(
            "{} buckets, {} parameters, {:.2} MiB in all\n",
            self.buckets.len(),
            names.len(),
            self.bytes() as f64 / (1 << 20) as f64
        );
        for (b, bucket) in self.buckets.iter().enumerate() {
            let name = |i: Option<&usize>| i.and_then(|&i| names.get(i)).map_or("?", |n| n.as_str());
            s += &format!(
                "  bucket {b:>3}: {:>4} tensors, {:>8.3} MiB  {} … {}\n",
                bucket.params.len(),
                bucket.len as f64 * 4.0 / (1 << 20) as f64,
                name(bucket.params.first()),
                name(bucket.params.last())
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reverse order, caps (first smaller), whole parameters, contiguous offsets, every
    /// parameter exactly once.
    #[test]
    fn buckets_follow_ddp_rules() {
        // In elements: caps of 100 and 1000 bytes are 25 and 250 elements.
        let sizes = [10, 300, 5, 5, 20, 200, 30];
        let plan = BucketPlan::with_caps(&sizes, 100, 1000);
        let params: Vec<Vec<usize>> = plan.buckets.iter().map(|b| b.params.clone()).collect();
        // Reverse: 6 (30 ≥ 25 closes the first bucket), then 5+4+3+2 = 230 < 250, +1 = 530 closes, then 0.
        assert_eq!(params, vec![vec![6], vec![5, 4, 3, 2, 1], vec![0]]);
        let mut offset = 0;
        for b in &plan.buckets {
            assert_eq!(b.offset, offset);
            assert_eq!(b.len, b.params.iter().map(|&i| sizes[i]).sum::<usize>());
            offset += b.len;
        }
        assert_eq!(offset, plan.total);
        assert_eq!(plan.total, sizes.iter().sum::<usize>());
        let mut all: Vec<usize> = params.concat();
        all.sort_unstable();
        assert_eq!(all, (0..sizes.len()).collect::<Vec<_>>());
        assert!(BucketPlan::new(&[]).buckets.is_empty());
    }
}
