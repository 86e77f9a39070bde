"""Runnable examples on fastconv.nn: LeNet-5 on the scikit-learn digits (`train_lenet`),
synthetic EKG-like 1-D signals (`signals1d`) and synthetic 3-D volumes (`volumes3d`), each
with `main(argv=None)` returning the final test accuracy and wired to
`python -m fastconv train-lenet | train-1d | train-3d`; and the pretrained and edge
programs: `classify` (EfficientNet-Lite0 on photos), `edges` (the course's edge maps) and
`learn_edges` (gradient descent recovers the Sobel kernel), wired to
`python -m fastconv classify | edges | learn-edges`; and the course's applications:
`style_transfer` (neural style transfer) and `visualize` (the top-9 patches per unit),
wired to `python -m fastconv style-transfer | visualize`; and object detection on
fastconv.datasets.shapes: `train_yolo`, `train_fast_rcnn` and `detect` (a saved YOLO on
one image), wired to `python -m fastconv train-yolo | train-fast-rcnn | detect`.

They need the `examples` extra (scikit-learn for the digits, matplotlib for the plots,
scikit-image for the photos); `classify`, `style_transfer` and `visualize` need the
`pretrained` extra.
"""
