// libpng's simplified API (png_image) and TurboJPEG: neither longjmps across Swift frames.
#include <png.h>
#include <turbojpeg.h>
