"""The four proofs every certificate request carries (DESIGN.md section 5).

* PoStake (`ledger`, `verifier`): an Ed25519 account with enough bonded stake
  in the replicated stake ledger signs the request.
* PoWork (`work`): hashcash over SHA-256, bound to the request digest.
* PoSpace (`space`): a chiapos proof from a plot whose id is bound to the
  account key, answering a challenge derived from the epoch beacon.
* PoTime (`vdf`): a chiavdf Wesolowski proof in a 1024-bit class group derived
  from the epoch beacon and the account.

`bundle` holds the messages, `codec` their strict msgpack encoding, `policy`
the genesis ``[policy]`` and ``[[accounts]]`` sections, `cache` the per-epoch
memory, `verifier` the order of the checks and `prover` the requester's side.
Everything here is pure computation: no sockets, files or clocks (plot access
is passed in as a `space.PlotReader`).
"""
