"""Runnable training examples on fastconv.nn: LeNet-5 on the scikit-learn digits
(`train_lenet`), synthetic EKG-like 1-D signals (`signals1d`) and synthetic 3-D volumes
(`volumes3d`). Each module has `main(argv=None)` returning the final test accuracy and is
wired to `python -m fastconv train-lenet | train-1d | train-3d`.

They need the `examples` extra (scikit-learn for the digits, matplotlib for the plots).
"""
