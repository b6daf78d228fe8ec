#!/bin/sh
# gen_media.sh: generates the worker's media test clips with the ffmpeg CLI (lavfi sources, each
# input limited by an input-side -t so nothing runs forever). Clips are small and short so the
# media tests take seconds; nothing generated here is committed.
#
# usage: tools/gen_media.sh OUTDIR          the small test clips (a few seconds to make)
#        tools/gen_media.sh --long [OUTDIR]  also the 10-minute 720p H.264 benchmark clip
#                                            (B-frames, 250-frame GOP; ~3 min to make; cached in
#                                            OUTDIR, default $VL3_MEDIA_CACHE or build/media-cache)
# Each file is written to a temporary name and renamed, and a lock serialises concurrent runs, so
# tests running in parallel can all call this script. Existing files are kept.
set -eu

long=0
if [ "${1:-}" = "--long" ]; then
    long=1
    shift
fi
out=${1:-${VL3_MEDIA_CACHE:-build/media-cache}}
mkdir -p "$out"
command -v ffmpeg >/dev/null || { echo "gen_media.sh: ffmpeg not found" >&2; exit 1; }

exec 9>"$out/.lock"
flock 9

ff() { ffmpeg -nostdin -hide_banner -loglevel error "$@"; }

# make NAME ARGS...: run ffmpeg with ARGS writing to a temporary file, then rename it to NAME.
make() {
    name=$1
    shift
    [ -s "$out/$name" ] && return 0
    ext=${name##*.}
    ff "$@" -y "$out/.tmp.$name.$ext"
    mv "$out/.tmp.$name.$ext" "$out/$name"
}

src="testsrc2=s=320x240:r=30"
x264="-c:v libx264 -preset veryfast -pix_fmt yuv420p"

# Constant frame rate, 30 fps, exactly 4 s (the end falls on a sampling boundary), B-frames.
make cfr.mp4 -f lavfi -t 4 -i "$src" $x264 -bf 3
# 25 fps, 7.3 s, short GOP (12) with B-frames: keyframes closer than 1-s samples.
make gop12.mp4 -f lavfi -t 7.3 -i "testsrc2=s=320x240:r=25" $x264 -g 12 -bf 2
# Long GOP (250 frames at 30 fps = 8.3 s) with B-pyramid, 9.5 s.
make longgop.mp4 -f lavfi -t 9.5 -i "$src" $x264 -g 250 -bf 3 -b_strategy 1
# Variable frame rate: frames dropped irregularly and timestamps jittered, passed through as is.
make vfr.mkv -f lavfi -t 6 -i "$src" \
    -vf "select='not(eq(mod(n\,7)\,3))*not(eq(mod(n\,11)\,5))*not(between(n\,40\,70))',setpts='PTS+0.013*mod(N\,3)/TB'" \
    -fps_mode passthrough $x264 -bf 2
make vfr.mp4 -f lavfi -t 6 -i "$src" \
    -vf "select='not(eq(mod(n\,5)\,2))*not(between(n\,90\,130))'" -fps_mode passthrough $x264 -bf 2
# Non-zero start time: MPEG-TS (1.4 s mux delay) and Matroska shifted by 5.25 s.
make start.ts -f lavfi -t 5 -i "$src" $x264 -bf 3
make start.mkv -f lavfi -t 5 -i "$src" $x264 -bf 3 -output_ts_offset 5.25
# Odd sizes: VP9 4:2:0 and H.264 4:4:4 at 321x241, MPEG-4 Part 2 at 179x101 in AVI.
make odd.webm -f lavfi -t 2 -i "testsrc2=s=321x241:r=24" -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 400k -pix_fmt yuv420p
make odd444.mp4 -f lavfi -t 2 -i "testsrc2=s=321x241:r=24" -c:v libx264 -preset veryfast -pix_fmt yuv444p
make odd.avi -f lavfi -t 2 -i "testsrc2=s=179x101:r=15" -c:v mpeg4 -q:v 4
# Other pixel formats: 10-bit H.264 4:2:0 and H.265 4:2:2 10-bit, 4:2:2 8-bit, full-range yuvj420p.
make yuv420p10.mp4 -f lavfi -t 2 -i "$src" -c:v libx264 -preset veryfast -pix_fmt yuv420p10le
make yuv422p10.mkv -f lavfi -t 2 -i "$src" -c:v libx265 -preset ultrafast -pix_fmt yuv422p10le -x265-params log-level=error
make yuv422p.mp4 -f lavfi -t 2 -i "$src" -c:v libx264 -preset veryfast -pix_fmt yuv422p
make yuvj420p.mp4 -f lavfi -t 2 -i "$src" -c:v libx264 -preset veryfast -pix_fmt yuvj420p
# Alpha: PNG in MOV (rgba), ProRes 4444 (yuva444p10le), VP9 with alpha (yuva420p in WebM).
make alpha_png.mov -f lavfi -t 1 -i "testsrc2=s=160x120:r=10,format=rgba,geq=r='r(X\,Y)':g='g(X\,Y)':b='b(X\,Y)':a='X+Y'" -c:v png
make alpha_prores.mov -f lavfi -t 1 -i "testsrc2=s=160x120:r=10,format=yuva444p10le" -c:v prores_ks -profile:v 4444 -pix_fmt yuva444p10le
make alpha_vp9.webm -f lavfi -t 1 -i "testsrc2=s=160x120:r=10,format=yuva420p" -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -pix_fmt yuva420p
# Rotation metadata (display matrix) of 90, 180 and 270 degrees on a non-square clip.
# (FFmpeg 5.1 writes the rotate tag as a display matrix only when stream-copying.)
make norot.mp4 -f lavfi -t 2 -i "testsrc2=s=240x160:r=10" $x264
for r in 90 180 270; do
    make rot$r.mp4 -i "$out/norot.mp4" -c copy -metadata:s:v:0 rotate=$r
done
# Audio only.
make audio.m4a -f lavfi -t 2 -i "sine=f=440:r=16000" -c:a aac

if [ "$long" = 1 ]; then
    # 10 minutes of 720p H.264, 30 fps, B-frames, 250-frame GOP: the `vl3 bench decode` clip.
    make long720.mp4 -f lavfi -t 600 -i "testsrc2=s=1280x720:r=30" -c:v libx264 -preset veryfast \
        -pix_fmt yuv420p -g 250 -bf 3 -threads 2
fi
