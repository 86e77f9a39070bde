"""Placeholder until the pooling family lands (work in progress in this session)."""


def max_pool(*args, **kwargs):
    raise NotImplementedError


def avg_pool(*args, **kwargs):
    raise NotImplementedError


def max_pool_backward(*args, **kwargs):
    raise NotImplementedError


def avg_pool_backward(*args, **kwargs):
    raise NotImplementedError
