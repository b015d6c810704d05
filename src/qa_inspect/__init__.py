"""qa-inspect: quality inspection (客服质检) of e-commerce customer-service chats."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qa-inspect")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
