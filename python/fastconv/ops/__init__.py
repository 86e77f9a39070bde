"""The op families, one module each: conv (convolution and its gradients), im2col
(im2col/col2im), pool (max and average pooling and their gradients), boxes (IoU, format
conversion, non-max suppression, Soft-NMS), roi (RoI align and RoI pool and their
gradients), metric (embedding distances and the mined batch triplet loss under
fastconv.face).

Each module holds the family's public functions (re-exported by `fastconv`) and, for the
families with a window geometry, its plan: `<family>_plan(shapes, dtype, device,
**geometry)` validates and normalizes everything once and is kept in the family's
`_backend.PlanCache`; the public function is `plan.forward(...)` (and the backward calls),
and the nn layers hold the plan they last used.
"""
