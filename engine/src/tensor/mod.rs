//! `Tensor`: a cheap handle (an `Arc`) to storage + layout + dtype + device, and, when it was made
//! by a differentiable op, the autograd node that made it.

mod convert;
mod create;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::autograd::{self, BackwardOp, Node};
use crate::{DType, Device, Error, Layout, Result, Shape, Storage};

/// A unique id per tensor handle; autograd keys gradients by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

pub(crate) struct Inner {
    id: TensorId,
    storage: Arc<RwLock<Storage>>,
    layout: Layout,
    dtype: DType,
    device: Device,
    /// True for parameters (leaves the user asked gradients for) and for every tensor computed
    /// from one while gradients are recorded.
    requires_grad: bool,
    /// True when a recorded op made this tensor (it is not a leaf).
    made_by_op: bool,
    /// How this tensor was made. Taken (and so freed) by `backward()`.
    node: Mutex<Option<Node>>,
    /// The accumulated gradient of a leaf.
    grad: Mutex<Option<Tensor>>,
}

/// An n-dimensional array on a device, with optional gradient tracking.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

impl Tensor {
    /// Wraps a freshly computed storage as a contiguous tensor of `shape`.
    pub fn from_storage(storage: Storage, shape: impl Into<Shape>) -> Tensor {
        let (dtype, device) = (storage.dtype(), storage.device());
        Tensor::build(Arc::new(RwLock::new(storage)), Layout::contiguous(shape), dtype, device, false, None)
    }

    fn build(
        storage: Arc<RwLock<Storage>>,
        layout: Layout,
        dtype: DType,
        device: Device,
        requires_grad: bool,
        node: Option<Node>,
    ) -> Tensor {
        Tensor(Arc::new(Inner {
            id: TensorId::next(),
            storage,
            layout,
            dtype,
            device,
            requires_grad,
            made_by_op: node.is_some(),
            node: Mutex::new(node),
            grad: Mutex::new(None),
        }))
    }

    /// A new handle on the same storage with another layout. Records nothing: view ops attach
    /// their own backward with [`Tensor::record`].
    pub fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor::build(self.0.storage.clone(), layout, self.0.dtype, self.0.device, false, None)
    }

    /// Makes `self` (a fresh op output) differentiable: when gradients are being recorded and
    /// any input requires them, returns a handle that remembers `op` and `inputs`.
    /// This is how an op outside the engine plugs into autograd.
    pub fn record(self, inputs: &[&Tensor], op: impl BackwardOp + 'static) -> Tensor {
        if !autograd::is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
            return self;
        }
        let node = Node::new(Box::new(op), inputs.iter().map(|&t| t.clone()).collect());
        Tensor::build(self.0.storage.clone(), self.0.layout.clone(), self.0.dtype, self.0.device, true, Some(node))
    }

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn shape(&self) -> &Shape {
        self.0.layout.shape()
    }
    pub fn dims(&self) -> &[usize] {
        self.0.layout.dims()
    }
    pub fn rank(&self) -> usize {
        self.dims().len()
    }
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    pub fn device(&self) -> Device {
        self.0.device
    }
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// The size of one axis (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        Ok(self.dims()[self.shape().axis(axis, "dim")?])
    }

    /// Read access to the storage (shared with every view of it).
    pub fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().unwrap_or_else(|e| e.into_inner())
    }
    /// Write access to the storage, for in-place updates such as an optimizer step.
    pub fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        self.0.storage.write().unwrap_or_else(|e| e.into_inner())
    }
    /// True when both handles view the same storage buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }
    /// Number of tensor handles (views included) that share this storage.
    pub fn storage_refcount(&self) -> usize {
        Arc::strong_count(&self.0.storage)
    }

    // ---- autograd --------------------------------------------------------------------------

    /// True when gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// A leaf handle on the same storage that collects gradients (a parameter) when `on`, or a
    /// plain detached handle when not.
    pub fn requires_grad_(&self, on: bool) -> Tensor {
        Tensor::build(self.0.storage.clone(), self.0.layout.clone(), self.0.dtype, self.0.device, on, None)
    }

    /// A handle on the same data that is cut from the graph.
    pub fn detach(&self) -> Tensor {
        self.requires_grad_(false)
    }

    /// True for tensors not made by a recorded op (inputs, parameters, detached tensors).
    pub fn is_leaf(&self) -> bool {
        !self.0.made_by_op
    }

    /// The accumulated gradient of a leaf, if a backward pass has reached it.
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Forgets the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
    /// Replaces the accumulated gradient by `g` (a tensor of this shape, kept as given) or
    /// forgets it (`None`). Data-parallel training writes the averaged gradient back this way.
    pub fn set_grad(&self, g: Option<Tensor>) -> Result<()> {
        if let Some(g) = &g {
            if g.shape() != self.shape() {
                return Err(Error::ShapeMismatch { op: "set_grad", lhs: self.shape().clone(), rhs: g.shape().clone() });
            }
        }
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = g.map(|g| g.detach());
        Ok(())
    }
    /// Adds `g` to the accumulated gradient (used by backward; public for optimizers and tests).
    pub fn accumulate_grad(&self, g: &Tensor) -> Result<()> {
        // The caller keeps its handle, so the first gradient is always copied.
        self.accumulate_grad_owned(g.clone())
    }

    /// [`Tensor::accumulate_grad`] taking the gradient by value: backward hands over the handles
    /// of its gradient store, so a gradient nobody else can see is kept without a copy.
    pub(crate) fn accumulate_grad_owned(&self, g: Tensor) -> Result<()> {
        if g.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "accumulate_grad",
                lhs: self.shape().clone(),
                rhs: g.shape().clone(),
            });
        }
        let mut slot = self.0.grad.lock().unwrap_or_else(|e| e.into_inner());
        let _guard = autograd::no_grad();
        *slot = Some(match slot.take() {
            Some(old) => old.add(&g)?,
            // The first gradient is kept as is only when nothing else can see its buffer. Backward
            // hands one tensor to several leaves (`a + b`), passes the caller's seed through, and
            // gives each input of `cat` a slice of one buffer; stored as is, those `.grad()`s
            // would alias each other (an in-place update of one would change the others) and a
            // slice would keep the whole buffer alive.
            // It is also copied when its layout is not the leaf's (PyTorch's layout contract:
            // a dense leaf, e.g. a channels-last one, gets a gradient with its strides; any
            // other leaf a row-major one), so `.grad()` never comes back transposed.
            None if g.owns_its_storage() && self.grad_layout_fits(&g) => g.detach(),
            None => g.fresh_copy_like(self.layout())?,
        });
        Ok(())
    }

    /// True when this is the only handle on its storage (and on itself) and covers all of the
    /// storage densely (row-major, channels-last or any other dense order).
    pub(crate) fn owns_its_storage(&self) -> bool {
        Arc::strong_count(&self.0) == 1
            && self.storage_refcount() == 1
            && self.layout().dense_order().is_some()
            && self.layout().offset() == 0
            && self.storage().len() == self.numel()
    }

    /// True when `g` already has the layout this leaf's gradient should have: the leaf's own
    /// strides when the leaf is dense but not row-major, row-major otherwise.
    fn grad_layout_fits(&self, g: &Tensor) -> bool {
        if self.layout().dense_order().is_some() && !self.is_contiguous() {
            g.layout().strides() == self.layout().strides()
        } else {
            g.is_contiguous()
        }
    }

    /// A copy in a new buffer (unlike `contiguous`, which returns `self` when it can) with the
    /// strides of `like` when that is a dense layout of the same shape, else row-major.
    fn fresh_copy_like(&self, like: &Layout) -> Result<Tensor> {
        let order = crate::ops::OutputOrder::of(self.shape(), &[like]);
        let l = order.apply(self.layout());
        let out = match &*self.storage() {
            Storage::Cpu(s) => Storage::Cpu(crate::cpu::copy::contiguous(s, &l)),
            Storage::Gpu(s) => Storage::Gpu(crate::gpu::prims::copy::contiguous(s, &l)?),
        };
        Ok(order.wrap(out, self.shape().clone()))
    }

    /// The inputs of the node that made this tensor, if it still has one.
    pub(crate) fn node_inputs(&self) -> Option<Vec<Tensor>> {
        self.0.node.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|n| n.inputs.clone())
    }
    pub(crate) fn take_node(&self) -> Option<Node> {
        self.0.node.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
    /// True when this tensor was made by a recorded op whose node a backward pass has freed.
    pub(crate) fn graph_freed(&self) -> bool {
        self.0.made_by_op && self.0.node.lock().unwrap_or_else(|e| e.into_inner()).is_none()
    }

    // ---- checks shared by ops --------------------------------------------------------------

    pub(crate) fn same_device(&self, other: &Tensor, op: &'static str) -> Result<()> {
        if self.device() != other.device() {
            return Err(Error::DeviceMismatch { op, lhs: self.device(), rhs: other.device() });
        }
        Ok(())
    }
    /// The error for two tensors on different devices.
    pub(crate) fn device_mismatch(&self, other: &Tensor, op: &'static str) -> Error {
        Error::DeviceMismatch { op, lhs: self.device(), rhs: other.device() }
    }
    pub(crate) fn same_dtype(&self, other: &Tensor, op: &'static str) -> Result<()> {
        if self.dtype() != other.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: self.dtype(), rhs: other.dtype() });
        }
        Ok(())
    }
    pub(crate) fn expect_float(&self, op: &'static str) -> Result<()> {
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType { op, dtype: self.dtype() });
        }
        Ok(())
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor[{}, {}, {}", self.shape(), self.dtype(), self.device())?;
        if self.requires_grad() {
            write!(f, ", requires_grad")?;
        }
        if self.numel() <= 16 {
            if let Ok(v) = self.to_vec_f64() {
                write!(f, ", {v:?}")?;
            }
        }
        write!(f, "]")
    }
}
