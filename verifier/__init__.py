"""xen-verify: verify a Xen patch against real Xen trees and backport branches."""

__version__ = "0.1.0"
