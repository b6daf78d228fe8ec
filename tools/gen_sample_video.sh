#!/usr/bin/env bash
# gen_sample_video.sh OUT.mp4 [SECONDS] [WxH]: a small H.264 sample clip from FFmpeg's lavfi
# test sources (testsrc2 with a moving pattern and a scene change half-way), for the demo.
set -euo pipefail
out=${1:?usage: gen_sample_video.sh OUT.mp4 [SECONDS] [WxH]}
secs=${2:-6}
size=${3:-320x240}
half=$(( secs / 2 ))
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -t "$half" -i "testsrc2=size=${size}:rate=30" \
  -f lavfi -t "$(( secs - half ))" -i "smptebars=size=${size}:rate=30" \
  -filter_complex "[0:v][1:v]concat=n=2:v=1[v]" -map "[v]" \
  -c:v libx264 -pix_fmt yuv420p -g 60 -bf 2 "$out"
