"""The certificate authority: HSM keys, ceremony, profiles, issuance, verification.

Module map (DESIGN.md section 6):

- ``schemes``: signature schemes and their AlgorithmIdentifiers; software signers.
- ``hsm``: the PKCS#11 ``Signer`` (python-pkcs11) behind one worker thread.
- ``der`` / ``certbuild``: DER encoding of TBSCertificate, CSR and CRL structures,
  so that any ``Signer`` (an HSM included) can sign them.
- ``profiles``: RFC 5280 / CA/Browser Forum profiles for root, intermediate, leaf.
- ``genesis``: the ``[ca]`` section of the genesis file (policy, log keys, intermediates).
- ``ceremony``: key ceremony and intermediate rotation on SoftHSM or a real HSM.
- ``issuance``: CSR checks, precertificates, final certificates from an SCT quorum.
- ``revocation``: revocation records and CRLs.
- ``verify``: what ``trustchain cert verify`` checks, offline and online.
"""
