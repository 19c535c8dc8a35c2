"""The onionmail exception tree.

Every error the box raises derives from :class:`OnionMailError`; each leaf
also inherits the built-in exception it most resembles, so callers that only
know the standard library still catch it sensibly::

    OnionMailError
     |- ConfigError (ValueError)           a config file or key is wrong
     |- AddressError (ValueError)          a mail or onion address is malformed
     |- IdentityError (ValueError)         a key file is missing, damaged or unreadable
     |   +- PassphraseError                the passphrase does not open the key
     |- OpenPGPError (ValueError)          an OpenPGP key, Autocrypt header or message is unusable
     |   |- KeyMismatchError               a key's user id does not name the expected address
     |   +- DecryptionError                a message does not decrypt with the box's key
     |- EnvelopeError (ValueError)         a sealed envelope is malformed
     |   |- SealError                      the seal does not open with the sender's key
     |   |- ReplayError                    the envelope was seen before or is stale
     |   +- EnvelopeMismatchError          sealed routing data disagrees with SMTP's
     |- TorError (RuntimeError)            tor could not be launched or controlled
     |   +- TorTimeoutError (TimeoutError) tor did not reach a state in time
     |- TestnetError (RuntimeError)        the private Tor network failed
     |- QueueError (OSError)               the outbound queue could not be written
 |- RegistrationError (ValueError)     a gateway registration is malformed, refused or stale
     +- DeliveryError (ConnectionError)    one delivery attempt failed
         +- PermanentDeliveryError         ... and retrying cannot help

Messages are meant for the user: they say what is wrong and, where possible,
what to do. They never contain mail addresses, subjects or key material.
"""

from __future__ import annotations


class OnionMailError(Exception):
    """Base class of every error onionmail raises on purpose."""


class ConfigError(OnionMailError, ValueError):
    """A configuration file is missing, unreadable or holds a bad value.

    The message names the file and the key.
    """


class AddressError(OnionMailError, ValueError):
    """A mail address or onion address is malformed."""


class IdentityError(OnionMailError, ValueError):
    """A box identity (key file) is missing, damaged or unreadable."""


class PassphraseError(IdentityError):
    """The passphrase does not open the key file, or one is needed."""


class OpenPGPError(OnionMailError, ValueError):
    """An OpenPGP key, Autocrypt header or message is malformed or cannot be used."""


class KeyMismatchError(OpenPGPError):
    """A key's user ids (or an Autocrypt addr) do not name the address it is for."""


class DecryptionError(OpenPGPError):
    """An OpenPGP message is not encrypted to the box's key, is damaged, or is refused."""


class EnvelopeError(OnionMailError, ValueError):
    """A sealed envelope is malformed (wrong magic, length or structure)."""


class SealError(EnvelopeError):
    """The seal does not open with the key derived from the claimed sender."""


class ReplayError(EnvelopeError):
    """The envelope was delivered before, or is outside the accepted time window."""


class EnvelopeMismatchError(EnvelopeError):
    """The sender, recipients or session bound inside the seal differ from SMTP's."""


class TorError(OnionMailError, RuntimeError):
    """tor could not be launched, attached to, or asked to do something."""


class TorTimeoutError(TorError, TimeoutError):
    """tor did not reach the wanted state (bootstrap, publication) in time."""


class TestnetError(OnionMailError, RuntimeError):
    """The private Tor network could not be started, inspected or stopped."""

    __test__ = False  # not a pytest test class despite the name


class QueueError(OnionMailError, OSError):
    """The outbound queue could not be read or written."""


class RegistrationError(OnionMailError, ValueError):
    """A gateway registration request or reply is malformed, refused or stale."""


class DeliveryError(OnionMailError, ConnectionError):
    """One delivery attempt failed; the message stays queued for a retry."""


class PermanentDeliveryError(DeliveryError):
    """The peer refused the message for good (5xx); retrying cannot help."""
