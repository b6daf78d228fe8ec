# Every external dependency, found with pkg-config, with the minimum version we test against
# (Debian 12's). Nothing is vendored. docs/dependencies.md says why each one was chosen.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
pkg_check_modules(RDKAFKA  REQUIRED IMPORTED_TARGET rdkafka>=2.0)
pkg_check_modules(PQ       REQUIRED IMPORTED_TARGET libpq>=15)
pkg_check_modules(AV       REQUIRED IMPORTED_TARGET libavformat>=59 libavcodec>=59 libavutil>=57 libswscale>=6)
pkg_check_modules(UV       REQUIRED IMPORTED_TARGET libuv>=1.44)
pkg_check_modules(ZSTD     REQUIRED IMPORTED_TARGET libzstd>=1.5)
pkg_check_modules(SYSTEMD  REQUIRED IMPORTED_TARGET libsystemd>=252)
pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas>=0.3)
pkg_check_modules(JANSSON  REQUIRED IMPORTED_TARGET jansson>=2.14)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc>=2.6)
find_library(MATH_LIB m REQUIRED)
