// MTCNN face detection in C++17 with OpenCV DNN, on the ONNX nets exported by
// `mtcnnkit export --format onnx`. The cascade mirrors mtcnnkit's Python pipeline
// (src/mtcnnkit/detect/cascade.py, boxes.py, pyramid.py, sampling.py) step by step,
// including its float32 arithmetic, so both give the same faces.
//
//   mtcnn_cpp IMAGE --models DIR [--min-face 20] [--json out.json] [--out annotated.jpg]
//             [--repeat N] [--threads N]

#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr float kThresholds[3] = {0.6f, 0.7f, 0.7f};
constexpr double kScaleFactor = 0.709;
constexpr float kNmsPerScale = 0.5f, kNmsAcrossScales = 0.7f, kNmsRnet = 0.7f, kNmsOnet = 0.7f;
constexpr float kMean = 127.5f, kStdInv = 1.0f / 128.0f;

struct Box {
    float x1, y1, x2, y2;
};

struct Candidate {
    Box box;
    float score;
    float offsets[4];
    int group;  // NMS group (pyramid level) for the per-scale NMS
};

struct Face {
    Box box;
    float score;
    float landmarks[5][2];
};

// ---------------------------------------------------------------- area resampling

// Integral image of an HxWx3 uint8 RGB image: (H+1) x (W+1) x 3 exact int64 sums.
struct Integral {
    int h = 0, w = 0;
    std::vector<int64_t> sums;

    explicit Integral(const cv::Mat& rgb) : h(rgb.rows), w(rgb.cols), sums((h + 1) * size_t(w + 1) * 3, 0) {
        for (int y = 0; y < h; ++y) {
            const uint8_t* row = rgb.ptr<uint8_t>(y);
            int64_t run[3] = {0, 0, 0};
            int64_t* above = &sums[(size_t(y) * (w + 1)) * 3];
            int64_t* here = &sums[(size_t(y + 1) * (w + 1)) * 3];
            for (int x = 0; x < w; ++x)
                for (int c = 0; c < 3; ++c) {
                    run[c] += row[x * 3 + c];
                    here[(x + 1) * 3 + c] = above[(x + 1) * 3 + c] + run[c];
                }
        }
    }
    const int64_t* at(int y, int x) const { return &sums[(size_t(y) * (w + 1) + x) * 3]; }
};

// Bins of adaptive_avg_pool2d: output i covers [start + floor(i n / bins), start + ceil((i+1) n / bins)).
void binEdges(int start, int length, int bins, std::vector<int>& lo, std::vector<int>& hi) {
    lo.resize(bins);
    hi.resize(bins);
    for (int i = 0; i < bins; ++i) {
        lo[i] = start + int((int64_t(i) * length) / bins);
        hi[i] = start + int((int64_t(i + 1) * length + bins - 1) / bins);
    }
}

// Area-resize region [x0, x1) x [y0, y1) to out_h x out_w, normalised, written as 3 planes (CHW).
void sampleRegion(const Integral& ii, int x0, int y0, int x1, int y1, int out_h, int out_w, float* dst) {
    std::vector<int> xlo, xhi, ylo, yhi;
    binEdges(x0, x1 - x0, out_w, xlo, xhi);
    binEdges(y0, y1 - y0, out_h, ylo, yhi);
    const size_t plane = size_t(out_h) * out_w;
    for (int i = 0; i < out_h; ++i) {
        for (int j = 0; j < out_w; ++j) {
            const int64_t *a = ii.at(ylo[i], xlo[j]), *b = ii.at(ylo[i], xhi[j]);
            const int64_t *c = ii.at(yhi[i], xlo[j]), *d = ii.at(yhi[i], xhi[j]);
            const float count = float(int64_t(yhi[i] - ylo[i]) * (xhi[j] - xlo[j]));
            for (int ch = 0; ch < 3; ++ch) {
                const float mean = float(d[ch] - b[ch] - c[ch] + a[ch]) / count;
                dst[ch * plane + size_t(i) * out_w + j] = (mean - kMean) * kStdInv;
            }
        }
    }
}

// ---------------------------------------------------------------- box math

float faceProb(float l0, float l1) {  // softmax(...)[1], as torch computes it
    const float m = std::max(l0, l1);
    const float e0 = std::exp(l0 - m), e1 = std::exp(l1 - m);
    return e1 / (e0 + e1);
}

float overlap(const Box& a, const Box& b, bool min_mode, bool plus_one) {
    const float extra = plus_one ? 1.0f : 0.0f;
    const float area_a = (a.x2 - a.x1 + extra) * (a.y2 - a.y1 + extra);
    const float area_b = (b.x2 - b.x1 + extra) * (b.y2 - b.y1 + extra);
    const float iw = std::max(0.0f, std::min(a.x2, b.x2) - std::max(a.x1, b.x1) + extra);
    const float ih = std::max(0.0f, std::min(a.y2, b.y2) - std::max(a.y1, b.y1) + extra);
    const float inter = iw * ih;
    const float denom = min_mode ? std::min(area_a, area_b) : area_a + area_b - inter;
    return inter / std::max(denom, 1.17549435e-38f);
}

// Greedy NMS within groups; returns kept indices by decreasing score.
template <class T, class GetBox, class GetScore, class GetGroup>
std::vector<size_t> nms(const std::vector<T>& items, float threshold, bool min_mode, bool plus_one,
                        GetBox box, GetScore score, GetGroup group) {
    std::vector<size_t> order(items.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return score(items[a]) > score(items[b]); });
    std::vector<size_t> kept;
    std::vector<char> removed(items.size(), 0);
    for (size_t oi = 0; oi < order.size(); ++oi) {
        const size_t i = order[oi];
        if (removed[i]) continue;
        kept.push_back(i);
        for (size_t oj = oi + 1; oj < order.size(); ++oj) {
            const size_t j = order[oj];
            if (!removed[j] && group(items[i]) == group(items[j]) &&
                overlap(box(items[i]), box(items[j]), min_mode, plus_one) > threshold)
                removed[j] = 1;
        }
    }
    return kept;
}

std::vector<Candidate> nmsCandidates(const std::vector<Candidate>& c, float thr, bool by_group) {
    auto idx = nms(c, thr, false, false, [](const Candidate& x) { return x.box; },
                   [](const Candidate& x) { return x.score; },
                   [by_group](const Candidate& x) { return by_group ? x.group : 0; });
    std::vector<Candidate> out;
    out.reserve(idx.size());
    for (size_t i : idx) out.push_back(c[i]);
    return out;
}

Box calibrate(const Box& b, const float* off, bool plus_one) {
    const float extra = plus_one ? 1.0f : 0.0f;
    const float w = b.x2 - b.x1 + extra, h = b.y2 - b.y1 + extra;
    return {b.x1 + off[0] * w, b.y1 + off[1] * h, b.x2 + off[2] * w, b.y2 + off[3] * h};
}

Box square(const Box& b) {
    const float w = b.x2 - b.x1, h = b.y2 - b.y1, side = std::max(w, h);
    const float x1 = b.x1 + w * 0.5f - side * 0.5f, y1 = b.y1 + h * 0.5f - side * 0.5f;
    return {x1, y1, x1 + side, y1 + side};
}

// Integer crop region (MTCNN style): truncate, clip, 0-based half-open. False when empty.
bool cropRegion(const Box& b, int width, int height, int r[4]) {
    const int64_t tx1 = int64_t(std::trunc(b.x1)), ty1 = int64_t(std::trunc(b.y1));
    const int64_t tx2 = int64_t(std::trunc(b.x2)), ty2 = int64_t(std::trunc(b.y2));
    const int64_t x0 = std::max<int64_t>(tx1, 1) - 1, y0 = std::max<int64_t>(ty1, 1) - 1;
    const int64_t x1 = std::min<int64_t>(tx2, width), y1 = std::min<int64_t>(ty2, height);
    if (!(x1 > x0 && y1 > y0)) return false;
    r[0] = int(x0), r[1] = int(y0), r[2] = int(x1), r[3] = int(y1);
    return true;
}

// ---------------------------------------------------------------- the cascade

struct Nets {
    cv::dnn::Net pnet, rnet, onet;
};

cv::dnn::Net loadNet(const std::string& path) {
    cv::dnn::Net net = cv::dnn::readNetFromONNX(path);
    net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
    return net;
}

std::vector<cv::Mat> forward(cv::dnn::Net& net, const cv::Mat& blob, const std::vector<std::string>& names) {
    net.setInput(blob, "input");
    std::vector<cv::Mat> outs;
    net.forward(outs, names);
    for (auto& o : outs)
        if (!o.isContinuous()) o = o.clone();
    return outs;
}

std::vector<Candidate> propose(Nets& nets, const Integral& ii, double min_face) {
    std::vector<Candidate> found;
    double scale = 12.0 / min_face, side = std::min(ii.h, ii.w) * scale;
    int group = 0;
    for (; side >= 12.0; scale *= kScaleFactor, side *= kScaleFactor, ++group) {
        const int lh = int(ii.h * scale + 1), lw = int(ii.w * scale + 1);
        const int shape[4] = {1, 3, lh, lw};
        cv::Mat blob(4, shape, CV_32F);
        sampleRegion(ii, 0, 0, ii.w, ii.h, lh, lw, blob.ptr<float>());
        std::vector<cv::Mat> out = forward(nets.pnet, blob, {"cls", "box"});
        const int oh = out[0].size[2], ow = out[0].size[3];
        const size_t plane = size_t(oh) * ow;
        const float* cls = out[0].ptr<float>();
        const float* reg = out[1].ptr<float>();
        const float fscale = float(scale);  // torch divides a float32 tensor by the scale in float32
        for (int y = 0; y < oh; ++y)
            for (int x = 0; x < ow; ++x) {
                const size_t k = size_t(y) * ow + x;
                const float p = faceProb(cls[k], cls[plane + k]);
                if (!(p >= kThresholds[0])) continue;
                Candidate c;
                c.box = {std::floor((2.0f * x + 1.0f) / fscale), std::floor((2.0f * y + 1.0f) / fscale),
                         std::floor((2.0f * x + 12.0f) / fscale), std::floor((2.0f * y + 12.0f) / fscale)};
                c.score = p;
                for (int i = 0; i < 4; ++i) c.offsets[i] = reg[i * plane + k];
                c.group = group;
                found.push_back(c);
            }
    }
    found = nmsCandidates(found, kNmsPerScale, true);
    found = nmsCandidates(found, kNmsAcrossScales, false);
    for (auto& c : found) c.box = square(calibrate(c.box, c.offsets, false));
    return found;
}

// Crops every candidate (dropping empty regions) into one NCHW blob of size x size.
cv::Mat cropBlob(const Integral& ii, std::vector<Candidate>& cands, int size) {
    std::vector<Candidate> valid;
    std::vector<std::array<int, 4>> regions;
    for (const auto& c : cands) {
        int r[4];
        if (cropRegion(c.box, ii.w, ii.h, r)) {
            valid.push_back(c);
            regions.push_back({r[0], r[1], r[2], r[3]});
        }
    }
    cands.swap(valid);
    const int shape[4] = {int(cands.size()), 3, size, size};
    cv::Mat blob(4, shape, CV_32F);
    float* dst = blob.ptr<float>();
    for (size_t i = 0; i < regions.size(); ++i)
        sampleRegion(ii, regions[i][0], regions[i][1], regions[i][2], regions[i][3], size, size,
                     dst + i * 3 * size * size);
    return blob;
}

std::vector<Candidate> refine(Nets& nets, const Integral& ii, std::vector<Candidate> cands) {
    cv::Mat blob = cropBlob(ii, cands, 24);
    if (cands.empty()) return cands;
    std::vector<cv::Mat> out = forward(nets.rnet, blob, {"cls", "box"});
    const float* cls = out[0].ptr<float>();
    const float* reg = out[1].ptr<float>();
    std::vector<Candidate> passed;
    for (size_t i = 0; i < cands.size(); ++i) {
        const float p = faceProb(cls[2 * i], cls[2 * i + 1]);
        if (!(p > kThresholds[1])) continue;
        Candidate c = cands[i];
        c.score = p;
        std::copy(reg + 4 * i, reg + 4 * i + 4, c.offsets);
        passed.push_back(c);
    }
    passed = nmsCandidates(passed, kNmsRnet, false);
    for (auto& c : passed) c.box = square(calibrate(c.box, c.offsets, true));
    return passed;
}

std::vector<Face> output(Nets& nets, const Integral& ii, std::vector<Candidate> cands) {
    cv::Mat blob = cropBlob(ii, cands, 48);
    std::vector<Face> faces;
    if (cands.empty()) return faces;
    std::vector<cv::Mat> out = forward(nets.onet, blob, {"cls", "box", "landmarks"});
    const float* cls = out[0].ptr<float>();
    const float* reg = out[1].ptr<float>();
    const float* pts = out[2].ptr<float>();
    for (size_t i = 0; i < cands.size(); ++i) {
        const float p = faceProb(cls[2 * i], cls[2 * i + 1]);
        if (!(p > kThresholds[2])) continue;
        const Box& b = cands[i].box;
        const float w = b.x2 - b.x1 + 1.0f, h = b.y2 - b.y1 + 1.0f;
        Face f;
        for (int k = 0; k < 5; ++k) {
            f.landmarks[k][0] = w * pts[10 * i + k] + b.x1 - 1.0f;
            f.landmarks[k][1] = h * pts[10 * i + 5 + k] + b.y1 - 1.0f;
        }
        f.box = calibrate(b, reg + 4 * i, true);
        f.score = p;
        faces.push_back(f);
    }
    auto idx = nms(faces, kNmsOnet, true, true, [](const Face& f) { return f.box; },
                   [](const Face& f) { return f.score; }, [](const Face&) { return 0; });
    std::vector<Face> kept;
    for (size_t i : idx) kept.push_back(faces[i]);
    return kept;
}

std::vector<Face> detect(Nets& nets, const cv::Mat& rgb, double min_face) {
    Integral ii(rgb);
    std::vector<Candidate> cands = propose(nets, ii, min_face);
    if (!cands.empty()) cands = refine(nets, ii, std::move(cands));
    if (cands.empty()) return {};
    return output(nets, ii, std::move(cands));
}

// ---------------------------------------------------------------- output

std::string jsonString(const std::string& s) {
    std::ostringstream o;
    o << '"';
    for (unsigned char ch : s) {
        switch (ch) {
            case '"': o << "\\\""; break;
            case '\\': o << "\\\\"; break;
            case '\n': o << "\\n"; break;
            case '\t': o << "\\t"; break;
            case '\r': o << "\\r"; break;
            default:
                if (ch < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", ch);
                    o << buf;
                } else {
                    o << ch;
                }
        }
    }
    o << '"';
    return o.str();
}

std::string num(double v, int digits) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", digits, v);
    return buf;
}

std::string toJson(const std::string& image, int width, int height, const std::vector<Face>& faces,
                   const std::vector<double>& ms, int threads) {
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    const size_t n = sorted.size();
    const double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    std::ostringstream o;
    o << "{\n  \"image\": " << jsonString(image) << ",\n  \"width\": " << width
      << ",\n  \"height\": " << height << ",\n  \"faces\": [";
    for (size_t i = 0; i < faces.size(); ++i) {
        const Face& f = faces[i];
        o << (i ? ",\n" : "\n") << "    {\"box\": [" << num(f.box.x1, 4) << ", " << num(f.box.y1, 4) << ", "
          << num(f.box.x2, 4) << ", " << num(f.box.y2, 4) << "], \"score\": " << num(f.score, 6)
          << ", \"landmarks\": [";
        for (int k = 0; k < 5; ++k)
            o << (k ? ", " : "") << "[" << num(f.landmarks[k][0], 4) << ", " << num(f.landmarks[k][1], 4) << "]";
        o << "]}";
    }
    o << (faces.empty() ? "" : "\n  ") << "],\n  \"latency_ms\": {\"median\": " << num(median, 3)
      << ", \"min\": " << num(sorted.front(), 3) << ", \"runs\": " << n << ", \"threads\": " << threads
      << "}\n}\n";
    return o.str();
}

void annotate(cv::Mat& bgr, const std::vector<Face>& faces) {
    const int thick = std::max(1, std::min(bgr.rows, bgr.cols) / 300);
    for (const Face& f : faces) {
        cv::rectangle(bgr, cv::Point(cvRound(f.box.x1), cvRound(f.box.y1)),
                      cv::Point(cvRound(f.box.x2), cvRound(f.box.y2)), cv::Scalar(0, 255, 0), thick);
        for (const auto& p : f.landmarks)
            cv::circle(bgr, cv::Point(cvRound(p[0]), cvRound(p[1])), thick + 1, cv::Scalar(0, 0, 255), cv::FILLED);
        cv::putText(bgr, num(f.score, 2), cv::Point(cvRound(f.box.x1), cvRound(f.box.y1) - 3),
                    cv::FONT_HERSHEY_SIMPLEX, 0.4 * thick, cv::Scalar(0, 255, 0), thick);
    }
}

int usage(const char* argv0) {
    std::cerr << "usage: " << argv0
              << " IMAGE --models DIR [--min-face 20] [--json out.json] [--out annotated.jpg]"
                 " [--repeat N] [--threads N]\n";
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string image, models, json_path, out_path;
    double min_face = 20.0;
    int repeat = 1, threads = -1;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw std::runtime_error("missing value for " + a);
            return argv[++i];
        };
        try {
            if (a == "--models") models = value();
            else if (a == "--min-face") min_face = std::stod(value());
            else if (a == "--json") json_path = value();
            else if (a == "--out") out_path = value();
            else if (a == "--repeat") repeat = std::stoi(value());
            else if (a == "--threads") threads = std::stoi(value());
            else if (a == "-h" || a == "--help") return usage(argv[0]);
            else if (!a.empty() && a[0] == '-') throw std::runtime_error("unknown option " + a);
            else if (image.empty()) image = a;
            else throw std::runtime_error("more than one image given");
        } catch (const std::exception& e) {
            std::cerr << "error: " << e.what() << "\n";
            return usage(argv[0]);
        }
    }
    if (image.empty() || models.empty() || repeat < 1 || !(min_face > 0)) return usage(argv[0]);
    if (threads > 0) cv::setNumThreads(threads);

    cv::Mat bgr = cv::imread(image, cv::IMREAD_COLOR);  // applies EXIF orientation, like mtcnnkit
    if (bgr.empty()) {
        std::cerr << "error: cannot read image " << image << "\n";
        return 1;
    }
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);

    Nets nets;
    try {
        nets.pnet = loadNet(models + "/pnet.onnx");
        nets.rnet = loadNet(models + "/rnet.onnx");
        nets.onet = loadNet(models + "/onet.onnx");
    } catch (const cv::Exception& e) {
        std::cerr << "error: cannot load the ONNX nets from " << models << ": " << e.what() << "\n";
        return 1;
    }

    std::vector<Face> faces;
    std::vector<double> ms;
    detect(nets, rgb, min_face);  // warm-up: first calls allocate and pick kernels
    for (int r = 0; r < repeat; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        faces = detect(nets, rgb, min_face);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }

    const std::string json = toJson(image, rgb.cols, rgb.rows, faces, ms, cv::getNumThreads());
    if (!json_path.empty()) {
        std::ofstream f(json_path);
        f << json;
        if (!f) {
            std::cerr << "error: cannot write " << json_path << "\n";
            return 1;
        }
    } else {
        std::cout << json;
    }
    if (!out_path.empty()) {
        annotate(bgr, faces);
        if (!cv::imwrite(out_path, bgr)) {
            std::cerr << "error: cannot write " << out_path << "\n";
            return 1;
        }
    }
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    std::cerr << faces.size() << " face(s) in " << rgb.cols << "x" << rgb.rows << "; latency median "
              << num(sorted[sorted.size() / 2], 2) << " ms, min " << num(sorted.front(), 2) << " ms over "
              << repeat << " run(s), " << cv::getNumThreads() << " thread(s)\n";
    return 0;
}
