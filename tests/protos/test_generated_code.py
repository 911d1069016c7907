"""The committed generated code must match what protoc makes from the committed .proto files."""

from mamql.protos.generate import PROTO_FILES, ROOT, generate



def test_generated_code_is_up_to_date(tmp_path):
    generate(tmp_path)
    # protoc writes by import path (mamql/protos/...); the committed files live in protos/ at the root
    out = tmp_path / "mamql" / "protos"
    generated = sorted(p.name for p in out.glob("*_pb2*.py*"))
    assert len(generated) >= 2 * len(PROTO_FILES)
    stale = [name for name in generated if (out / name).read_text() != (ROOT / "protos" / name).read_text()]
    committed = sorted(p.name for p in (ROOT / "protos").glob("*_pb2*.py*"))
    assert committed == generated, "committed and generated file sets differ"
    assert not stale, f"stale generated code, run `python -m mamql.protos.generate`: {stale}"


def test_every_proto_field_is_commented():
    """Every field line of every message carries a comment (the contract is read by humans)."""
    bare = []
    for proto in PROTO_FILES:
        lines = (ROOT / proto).read_text().splitlines()
        in_message = False
        for i, line in enumerate(lines):
            stripped = line.strip()
            if stripped.startswith("message "):
                in_message = True
                continue
            if stripped == "}":
                in_message = False
            if in_message and stripped.endswith(";") and "=" in stripped:
                has_comment = "//" in stripped or lines[i - 1].strip().startswith("//")
                if not has_comment:
                    bare.append(f"{proto}:{i + 1}: {stripped}")
    assert not bare, "\n".join(bare)
