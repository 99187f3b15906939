"""Throwaway certificates for the TLS tests, made here with python3-cryptography: a CA,
an intermediate CA, server and client certificates (valid, expired, for other names),
and keys written with the permissions a test asks for.

    pki = Pki(tmp_path / "pki")
    leaf = pki.issue("localhost", names=("localhost", "127.0.0.1"))
    leaf.cert, leaf.key, pki.ca            # paths
    pki.client_context()                    # an ssl.SSLContext trusting the CA
"""

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "laurel tests")])


def _write_key(path, key, mode=0o600, password=None):
    enc = (serialization.BestAvailableEncryption(password.encode()) if password
           else serialization.NoEncryption())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8, enc))
    os.chmod(path, mode)


class Issued:
    """A certificate and its key on disk: ``cert``, ``key`` (paths), ``pem`` (text),
    ``x509`` and ``private_key`` (objects)."""

    def __init__(self, folder, tag, cert, key, key_mode=0o600, password=None):
        self.cert = Path(folder) / f"{tag}.crt"
        self.key = Path(folder) / f"{tag}.key"
        self.x509, self.private_key = cert, key
        self.pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self.cert.write_text(self.pem)
        _write_key(self.key, key, key_mode, password)


class Pki:
    """A CA (``ca``: its certificate's path) and what it signs."""

    def __init__(self, folder, tag="laurel test CA"):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._cert = self._build(_name(tag), _name(tag), self._key.public_key(), self._key,
                                 ca=True)
        self.ca = self.dir / "ca.crt"
        self.ca.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._n = 0

    @staticmethod
    def _build(subject, issuer, public_key, signing_key, ca=False, names=(), client=False,
               not_before=None, not_after=None):
        now = datetime.datetime.utcnow()
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(public_key).serial_number(x509.random_serial_number())
             .not_valid_before(not_before or now - _DAY)
             .not_valid_after(not_after or now + 2 * _DAY)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if names:
            alt = [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() or ":" in n
                   else x509.DNSName(n) for n in names]
            b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        if not ca:
            usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return b.sign(signing_key, hashes.SHA256())

    def issue(self, cn="localhost", names=("localhost", "127.0.0.1"), client=False,
              expired=False, key_mode=0o600, password=None, issuer=None, tag=None):
        """A certificate signed by this CA (or by ``issuer``, an intermediate from
        :meth:`intermediate`)."""
        self._n += 1
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.utcnow()
        span = dict(not_before=now - 10 * _DAY, not_after=now - _DAY) if expired else {}
        signer_cert, signer_key = issuer or (self._cert, self._key)
        cert = self._build(_name(cn), signer_cert.subject, key.public_key(), signer_key,
                           names=() if client else names, client=client, **span)
        return Issued(self.dir, tag or f"leaf{self._n}", cert, key, key_mode, password)

    def intermediate(self, cn="laurel test intermediate CA"):
        """(certificate, key) of an intermediate CA, for ``issue(issuer=...)``; its PEM
        is written to ``<dir>/intermediate.crt`` (returned third)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._build(_name(cn), self._cert.subject, key.public_key(), self._key,
                           ca=True)
        path = self.dir / "intermediate.crt"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return (cert, key), path

    def client_context(self, alpn=None, minimum=None, maximum=None, check_hostname=True):
        """An ssl client context that trusts this CA (and nothing else)."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.check_hostname = check_hostname
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        if minimum:
            ctx.minimum_version = minimum
        if maximum:
            ctx.maximum_version = maximum
        return ctx
