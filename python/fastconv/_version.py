from importlib import metadata

try:
    __version__ = metadata.version("fastconv")
except metadata.PackageNotFoundError:  # running from a source tree (tools/dev_build.sh)
    __version__ = "0.1.0+source"
