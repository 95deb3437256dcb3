// Example scanner client of `cellvit-trt serve`: streams a slide tile by tile and prints the nuclei that
// come back while it streams. The tiles come from a slide file (OpenSlide's C API) or from a folder of raw
// tiles as a scanner writes them.
//
//   scanner_client --target unix:///tmp/cellvit-trt.sock --slide slide.svs --tile 1024 [--cells out.jsonl]
//   scanner_client --target unix:///tmp/cellvit-trt.sock --tiles DIR --width W --height H --mpp 0.25
//       DIR holds x<X>_y<Y>_w<W>_h<H>.rgb (raw 8-bit RGB) or .jpg files, level-0 positions in the name.
//   Other options: --id NAME, --token-file F (sends "authorization: Bearer ..."), --ca cert.pem (TLS).
//
// Threads: this one writes tiles (Write blocks while the server is behind: gRPC flow control is the
// backpressure), a second one reads SlideOpened / TileCells / SlideResult. Exit 0 ok, 1 slide failed, 2 usage.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cellvit_trt/v1/scanner.grpc.pb.h"

#ifdef HAVE_OPENSLIDE
#include <openslide.h>
#endif

namespace v1 = cellvit_trt::v1;

struct Options {
  std::string target = "unix:///tmp/cellvit-trt.sock", slide, tiles, id, token_file, ca, cells;
  uint64_t width = 0, height = 0;
  double mpp = 0;
  uint32_t tile = 1024;
};

static std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// A number as cells.json writes it: integers without a fraction, others exactly (round-trip precision).
static void num(std::ostream& o, double v) {
  char buf[40];
  if (v == static_cast<double>(static_cast<int64_t>(v))) {
    std::snprintf(buf, sizeof buf, "%" PRId64, static_cast<int64_t>(v));
  } else {
    std::snprintf(buf, sizeof buf, "%.17g", v);
  }
  o << buf;
}

template <class R>
static void pairs(std::ostream& o, const R& flat) {
  o << '[';
  for (int i = 0; i + 1 < flat.size(); i += 2) {
    if (i) o << ',';
    o << '[';
    num(o, flat[i]);
    o << ',';
    num(o, flat[i + 1]);
    o << ']';
  }
  o << ']';
}

template <class R>
static void list(std::ostream& o, const R& values) {
  o << '[';
  for (int i = 0; i < values.size(); ++i) {
    if (i) o << ',';
    num(o, values[i]);
  }
  o << ']';
}

// One streamed cell as a JSON line with the keys of cells.json.
static void write_cell(std::ostream& o, const v1::Cell& c) {
  o << "{\"bbox\":";
  pairs(o, c.bbox());
  o << ",\"centroid\":";
  list(o, c.centroid());
  o << ",\"contour\":";
  pairs(o, c.contour());
  o << ",\"type_prob\":";
  num(o, static_cast<double>(c.type_prob()));
  o << ",\"type\":" << c.type() << ",\"patch_coordinates\":";
  list(o, c.patch_coordinates());
  o << ",\"cell_status\":" << c.cell_status() << ",\"offset_global\":";
  list(o, c.offset_global());
  o << ",\"edge_position\":" << (c.edge_position() ? "true" : "false") << ",\"cell_id\":" << c.cell_id();
  if (c.edge_position()) {
    o << ",\"edge_information\":{\"position\":";
    list(o, c.edge_information().position());
    o << ",\"edge_patches\":";
    if (c.edge_information().edge_patches_size() == 0) {
      o << "null";
    } else {
      pairs(o, c.edge_information().edge_patches());
    }
    o << '}';
  }
  o << "}\n";
}

struct TileSource {
  uint64_t width = 0, height = 0;
  double mpp = 0;
  // Calls send(x, y, w, h, rgb_or_jpeg, is_jpeg) for every tile; returns false to stop.
  virtual bool each(const std::function<bool(uint64_t, uint64_t, uint32_t, uint32_t, std::string&&, bool)>&) = 0;
  virtual ~TileSource() = default;
};

#ifdef HAVE_OPENSLIDE
struct SlideFile : TileSource {
  openslide_t* osr = nullptr;
  uint32_t tile;
  SlideFile(const std::string& path, uint32_t tile_) : tile(tile_) {
    osr = openslide_open(path.c_str());
    if (!osr) throw std::runtime_error(path + ": not a slide OpenSlide can open");
    if (const char* err = openslide_get_error(osr)) throw std::runtime_error(path + ": " + err);
    int64_t w, h;
    openslide_get_level0_dimensions(osr, &w, &h);
    width = static_cast<uint64_t>(w);
    height = static_cast<uint64_t>(h);
    if (const char* m = openslide_get_property_value(osr, OPENSLIDE_PROPERTY_NAME_MPP_X)) mpp = std::atof(m);
  }
  ~SlideFile() override { openslide_close(osr); }
  bool each(const std::function<bool(uint64_t, uint64_t, uint32_t, uint32_t, std::string&&, bool)>& send)
      override {
    std::vector<uint32_t> argb(static_cast<size_t>(tile) * tile);
    for (uint64_t y = 0; y < height; y += tile) {
      for (uint64_t x = 0; x < width; x += tile) {
        uint32_t w = static_cast<uint32_t>(std::min<uint64_t>(tile, width - x));
        uint32_t h = static_cast<uint32_t>(std::min<uint64_t>(tile, height - y));
        openslide_read_region(osr, argb.data(), x, y, 0, w, h);
        if (const char* err = openslide_get_error(osr)) throw std::runtime_error(err);
        std::string rgb(static_cast<size_t>(w) * h * 3, '\0');
        for (size_t i = 0; i < static_cast<size_t>(w) * h; ++i) {
          uint32_t p = argb[i], a = p >> 24;  // premultiplied ARGB: undo as openslide-python does
          uint32_t c[3] = {(p >> 16) & 255u, (p >> 8) & 255u, p & 255u};
          for (int k = 0; k < 3; ++k) {
            rgb[3 * i + k] = static_cast<char>(a == 255 || a == 0 ? c[k] : c[k] * 255u / a);
          }
        }
        if (!send(x, y, w, h, std::move(rgb), false)) return false;
      }
    }
    return true;
  }
};
#endif

// A folder of tiles named x<X>_y<Y>_w<W>_h<H>.rgb|.jpg, sent in raster order (y, then x).
struct TileFolder : TileSource {
  struct Entry {
    uint64_t x, y;
    uint32_t w, h;
    std::string path;
    bool jpeg;
  };
  std::vector<Entry> entries;
  TileFolder(const std::string& dir, uint64_t w, uint64_t h, double mpp_) {
    width = w;
    height = h;
    mpp = mpp_;
    DIR* d = opendir(dir.c_str());
    if (!d) throw std::runtime_error("cannot open the tile folder " + dir);
    while (dirent* e = readdir(d)) {
      unsigned long long x, y;
      unsigned tw, th;
      char ext[8] = {0};
      if (std::sscanf(e->d_name, "x%llu_y%llu_w%u_h%u.%7s", &x, &y, &tw, &th, ext) == 5) {
        std::string s(ext);
        if (s == "rgb" || s == "jpg" || s == "jpeg") entries.push_back({x, y, tw, th, dir + "/" + e->d_name, s != "rgb"});
      }
    }
    closedir(d);
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      return a.y != b.y ? a.y < b.y : a.x < b.x;
    });
    if (entries.empty()) throw std::runtime_error(dir + ": no x<X>_y<Y>_w<W>_h<H>.rgb|.jpg tiles");
  }
  bool each(const std::function<bool(uint64_t, uint64_t, uint32_t, uint32_t, std::string&&, bool)>& send)
      override {
    for (auto& e : entries) {
      if (!send(e.x, e.y, e.w, e.h, read_file(e.path), e.jpeg)) return false;
    }
    return true;
  }
};

static int usage(const char* msg) {
  std::cerr << "scanner_client: " << msg
            << "\nusage: scanner_client --target T (--slide FILE [--tile N] | --tiles DIR --width W --height H"
               " --mpp M) [--id NAME] [--mpp M] [--token-file F] [--ca PEM] [--cells OUT.jsonl]\n";
  return 2;
}

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--target") o.target = next();
      else if (a == "--slide") o.slide = next();
      else if (a == "--tiles") o.tiles = next();
      else if (a == "--id") o.id = next();
      else if (a == "--token-file") o.token_file = next();
      else if (a == "--ca") o.ca = next();
      else if (a == "--cells") o.cells = next();
      else if (a == "--width") o.width = std::stoull(next());
      else if (a == "--height") o.height = std::stoull(next());
      else if (a == "--mpp") o.mpp = std::stod(next());
      else if (a == "--tile") o.tile = static_cast<uint32_t>(std::stoul(next()));
      else return usage(("unknown option " + a).c_str());
    } catch (const std::exception& e) {
      return usage(e.what());
    }
  }
  if (o.slide.empty() == o.tiles.empty()) return usage("give --slide or --tiles");

  std::unique_ptr<TileSource> src;
  try {
    if (!o.slide.empty()) {
#ifdef HAVE_OPENSLIDE
      src = std::make_unique<SlideFile>(o.slide, o.tile);
#else
      return usage("built without OpenSlide: use --tiles");
#endif
    } else {
      if (!o.width || !o.height || o.mpp <= 0) return usage("--tiles needs --width, --height and --mpp");
      src = std::make_unique<TileFolder>(o.tiles, o.width, o.height, o.mpp);
    }
  } catch (const std::exception& e) {
    std::cerr << "scanner_client: " << e.what() << "\n";
    return 1;
  }
  if (o.mpp > 0) src->mpp = o.mpp;
  if (src->mpp <= 0) return usage("the slide has no mpp: give --mpp");
  if (o.id.empty()) {
    std::string base = o.slide.empty() ? o.tiles : o.slide;
    base = base.substr(base.find_last_of('/') + 1);
    o.id = base.substr(0, base.find_last_of('.'));
  }

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 * 1024 * 1024);  // a dense tile's cells can be a few MB
  args.SetMaxSendMessageSize(64 * 1024 * 1024);
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!o.ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = read_file(o.ca);
    creds = grpc::SslCredentials(ssl);
  }
  auto stub = v1::Scanner::NewStub(grpc::CreateCustomChannel(o.target, creds, args));

  grpc::ClientContext ctx;
  if (!o.token_file.empty()) {
    std::string token = read_file(o.token_file);
    token.erase(token.find_last_not_of(" \n\r\t") + 1);
    ctx.AddMetadata("authorization", "Bearer " + token);
  }
  auto stream = stub->StreamSlide(&ctx);

  std::ofstream cells_out;
  if (!o.cells.empty()) cells_out.open(o.cells);
  std::atomic<uint64_t> cells{0};
  std::atomic<bool> failed{false};
  v1::SlideResult result;
  std::thread reader([&] {
    v1::SlideResponse r;
    while (stream->Read(&r)) {
      if (r.has_opened()) {
        std::cerr << "opened " << r.opened().slide_id() << ": " << r.opened().grid_rows() << "x"
                  << r.opened().grid_cols() << " model tiles\n";
      } else if (r.has_cells()) {
        cells += r.cells().cells_size();
        if (cells_out) {
          for (const auto& c : r.cells().cells()) write_cell(cells_out, c);
        }
      } else if (r.has_result()) {
        result = r.result();
      }
    }
  });

  v1::SlideRequest open;
  auto* op = open.mutable_open();
  op->set_slide_id(o.id);
  op->set_width(src->width);
  op->set_height(src->height);
  op->set_mpp(src->mpp);
  if (!o.slide.empty()) {
    op->mutable_layout()->set_tile_width(o.tile);
    op->mutable_layout()->set_tile_height(o.tile);
  }
  bool ok = stream->Write(open);
  uint64_t sent = 0;
  if (ok) {
    try {
      src->each([&](uint64_t x, uint64_t y, uint32_t w, uint32_t h, std::string&& px, bool jpeg) {
        v1::SlideRequest req;
        auto* t = req.mutable_tile();
        t->set_x(x);
        t->set_y(y);
        t->set_width(w);
        t->set_height(h);
        if (jpeg) t->set_jpeg(std::move(px));
        else t->set_rgb(std::move(px));
        ++sent;
        return stream->Write(req);  // false: the server ended the stream (the status says why)
      });
    } catch (const std::exception& e) {
      std::cerr << "scanner_client: " << e.what() << "\n";
      ctx.TryCancel();
      failed = true;
    }
    v1::SlideRequest close;
    close.mutable_close();
    stream->Write(close);
  }
  stream->WritesDone();
  reader.join();
  grpc::Status status = stream->Finish();
  if (!status.ok() || failed) {
    std::cerr << "scanner_client: slide " << o.id << " failed: " << status.error_code() << " "
              << status.error_message() << "\n";
    return 1;
  }
  std::cout << o.id << ": " << result.cells_total() << " cells (" << cells << " streamed) from " << sent
            << " tiles, " << result.tiles_processed() << " model tiles, " << result.timings().total_s()
            << " s -> " << result.output_dir() << "\n";
  for (const auto& c : result.counts()) std::cout << "  " << c.name() << ": " << c.count() << "\n";
  return 0;
}
