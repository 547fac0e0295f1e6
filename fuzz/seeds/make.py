#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs from the crates' known-answer
vectors (run from anywhere; rewrites fuzz/seeds/<target>/). The seeds are
committed; rerun this after a known-answer file changes."""
import json
import pathlib
import shutil

FUZZ = pathlib.Path(__file__).resolve().parent.parent
ROOT = FUZZ.parent
SEEDS = FUZZ / "seeds"


def vectors(path):
    return json.loads((ROOT / path).read_text())


def write(target, name, data):
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def main():
    for folder in SEEDS.iterdir():
        if folder.is_dir():
            shutil.rmtree(folder)

    ecdh = vectors("psi/test-vectors/ecdh-ristretto255-v1.json")
    for s, session in enumerate(ecdh["sessions"]):
        for i, h in enumerate(session["requests_hex"] + session["replies_hex"] + session["responder_points_hex"]):
            write("psi_messages", f"session{s}-{i}", bytes.fromhex(h))
    for i, case in enumerate(ecdh["invalid"]):
        write("psi_messages", f"invalid{i}", bytes.fromhex(case["hex"]))

    labeled = vectors("psi/test-vectors/labeled-psi-v1.json")
    encoded = bytes.fromhex(labeled["encoded_set_hex"])
    for target in ("labeled_set", "labeled_answer"):
        write(target, "kat", encoded)
    kkrt = vectors("psi/test-vectors/kkrt-v1.json")
    for s, session in enumerate(kkrt["sessions"]):
        for m in session["messages"]:
            if "hex" in m:
                write("psi_kkrt", f"{m['step'].lower()}-{s}", bytes.fromhex(m["hex"]))
    write("psi_kkrt", "corrections", bytes([1, 3]) + bytes(4) + bytes(range(256)) * 32)
    write("psi_kkrt", "choices", bytes([1, 2]) + bytes(32 * 512))
    write("labeled_query", "kat", b"".join(bytes.fromhex(h) for h in labeled["blinded_hex"]))
    write("labeled_delta", "kat", bytes.fromhex(vectors("psi/test-vectors/labeled-delta-v1.json")["delta_hex"]))

    # The PIR fixture's layout (fuzz/src/lib.rs): format 2, seed, record
    # bytes, slots, columns; published with an OPRF key (the base point).
    layout = bytes([2]) + bytes(32) + (60).to_bytes(4, "little") + (64).to_bytes(4, "little") + (7).to_bytes(4, "little")
    base = bytes.fromhex("e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76")
    write("pir_layout", "small", layout)
    write("pir_layout", "published", layout + base)
    write("pir_messages", "query", layout + bytes(7 * 4))
    write("pir_lookup", "zeros", bytes(64))
    # Two columns: "ab" and a null (pir/src/record.rs's known answer).
    write("pir_record", "kat", bytes([2, 2, 0]) + b"ab" + bytes([0xFF, 0xFF]))

    # Paillier: an odd 2048-bit modulus, then a small ciphertext under it;
    # and a packed histogram plaintext of two sums (count 2, 8,000 rows).
    modulus = (1 << 2047) | 0xF1
    write("paillier", "key-and-ciphertext", bytes([0]) + modulus.to_bytes(256, "big") + (7).to_bytes(512, "big"))
    write("paillier", "packed-sums", bytes([1, 2]) + (8000).to_bytes(2, "little") + (0x1234 << 100).to_bytes(256, "big"))

    # The learning crate's known-answer vectors, each behind the selector of
    # its decoder (see fuzz_targets/learning_wire.rs).
    selectors = {"boost-histogram": 1, "boost-partition": 1, "leaf-masks": 4, "partial-scores": 5}
    for line in (ROOT / "learning/test-vectors/wire-v1.txt").read_text().splitlines():
        name, hexed = line.split()
        if name.startswith("share-"):
            selector = 6
        elif name in selectors:
            selector = selectors[name]
        elif name.startswith("boost-"):
            selector = 0
        elif name.endswith("label-holder") or name == "lr-masked":
            selector = 2
        else:
            selector = 3
        write("learning_wire", name, bytes([selector]) + bytes.fromhex(hexed))

    records = vectors("chain-connector/test-vectors/records-v2.json")
    for r in records["records"]:
        write("records", r["kind"], bytes.fromhex(r["signed_record_hex"]))
    for i, case in enumerate(records["invalid"]):
        write("records", f"invalid{i}", bytes.fromhex(case["hex"]))
    # A block of the vectors' records and an inclusion proof of one (the
    # encodings of chain-connector/src/block.rs; seal and root are not valid).
    signed = [bytes.fromhex(r["signed_record_hex"]) for r in records["records"]]
    u32 = lambda n: n.to_bytes(4, "little")
    u64 = lambda n: n.to_bytes(8, "little")
    lp = lambda b: u32(len(b)) + b

    def header(count):
        return lp(b"stayput/ledger/block/v2") + bytes(32) + u64(1) + bytes(32) + bytes(32) + u64(1_780_000_000) + u32(count)

    write("blocks", "block", header(len(signed)) + bytes(64) + u32(len(signed)) + b"".join(lp(r) for r in signed))
    write("blocks", "proof", lp(b"stayput/ledger/inclusion-proof/v2") + header(2) + bytes(64) + u32(1)
          + u32(1) + bytes(32) + lp(signed[0]))
    write("tasks", "request", bytes.fromhex(vectors("chain-connector/test-vectors/task-requests-v2.json")["signed_request_hex"]))

    dleq = vectors("zk-proofs/test-vectors/dleq-ristretto255-v1.json")
    write("zk_proofs", "dleq", bytes.fromhex(dleq["proof_hex"]))
    write("zk_proofs", "contribution", bytes.fromhex(vectors("zk-proofs/test-vectors/contribution-v1.json")["contribution_hex"]))
    write("shares", "two", bytes(32) + bytes([1]) + bytes(31))

    write("cohort_query", "demo.toml", (ROOT / "benches/src/stats.rs").read_text().split('r#"', 1)[1].split('"#', 1)[0])
    write("cohort_query", "histogram.json",
          '{"precision":1,"measures":[{"kind":"histogram","column":"x","edges":[0,0.25]}],"ranges":{"x":[0,1]}}')
    write("cohort_query", "bins.json",
          '{"precision":0,"bins":[{"kind":"bands","column":"a","edges":[0,1,2]}],"measures":[{"kind":"count"}],"ranges":{}}')
    write("cohort_query", "filter.toml",
          'precision = 2\nfilter = { all = [ { column = "diagnosis", is_in = ["I10"] }, { column = "age", between = [40, 80] },'
          ' { not = { column = "bmi", is_null = true } } ] }\ngroup_by = { column = "sex", values = ["F", "M"] }\n'
          'ranges = { age = [0, 120] }\n[[measures]]\nkind = "min"\ncolumn = "age"\n')


if __name__ == "__main__":
    main()
