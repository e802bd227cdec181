"""A bridged transfer's relay cost per 20 ms packet and direction (`app.sip.bridge.PayloadRelay`).

Same codec on both legs: the payload passes as is. Different codecs: decode to PCM, resample when the rates
differ, re-frame to 20 ms and encode. Times the conversion only (the two RtpSessions' own receive and send
are in `rtp_packets.py`); µs per packet as min / median of `--repeats` runs of `--frames` packets.
"""

from __future__ import annotations

import bench_frames as bf

from app.media.codecs import encode_from_pcm16
from app.media.formats import PCMA_8K, PCMU_8K
from app.media.g722 import G722Encoder
from app.sip.bridge import PayloadRelay

PAIRS = [("PCMU", "PCMU"), ("PCMU", "PCMA"), ("G722", "G722"), ("G722", "PCMU"), ("PCMU", "G722")]


def payloads(codec: str) -> list[bytes]:
    """256 distinct 20 ms payloads of the test signal in `codec`."""
    if codec == "G722":
        encoder = G722Encoder()
        return [encoder.encode(frame) for frame in bf.pcm_frames(16000)]
    pcm = bf.pcm_frames(8000)
    return [encode_from_pcm16(frame, PCMU_8K if codec == "PCMU" else PCMA_8K) for frame in pcm]


def main() -> None:
    args = bf.bench_args(__doc__)
    bf.print_machine("bridge relay: µs per 20 ms packet, one direction")
    print(f"{'caller → target':<18}{'min':>8}{'median':>9}  mode")
    for source, target in PAIRS:
        packets = payloads(source)
        relay = PayloadRelay(source, target)

        def run(frames: int, relay: PayloadRelay = relay, packets: list[bytes] = packets) -> None:
            for i in range(frames):
                relay.packets(packets[i & bf.MASK])

        low, median = bf.time_per_frame(run, args.frames, args.repeats)
        mode = "as is" if relay.passthrough else "through PCM"
        print(f"{source + ' → ' + target:<18}{low:>8.2f}{median:>9.2f}  {mode}")


if __name__ == "__main__":
    main()
