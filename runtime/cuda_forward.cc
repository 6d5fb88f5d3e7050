// The fused CUDA forward path: Gantry's kernels (runtime/cuda) for norms,
// rotary embedding with the KV-cache write, attention over the paged cache
// and the SwiGLU activation; cuBLAS (through at::linear) for the projections,
// or SkinnyGemm for small decode batches when asked (cuda_skinny_gemm).
// Decode steps of up to 4 sequences take DecodeGemv for every projection
// instead, with the norms, the residual adds and SiLU fused into it
// (decode_gemv), so a layer is six kernels: qkv, rotary + cache write,
// attention, o, gate/up, down; five with decode_gemv_rope (the default: the
// rotary embedding and cache write in qkv's epilogue), for models without a
// per-head q/k norm; those steps are batch-invariant bit for bit
// (DecodeGemv's rows are computed alone, and attention cuts every context as
// at batch 1), so a seeded sequence samples the same tokens alone or beside
// others.
// Weights were fused at load and are used in their stored layout.
//
// Each step's metadata (token ids, positions, cache slots, sequence lengths,
// query starts, block tables, logit rows) is packed into one pinned host
// buffer and uploaded with one copy. Decode steps whose batch fits a captured
// size replay a CUDA graph captured at load: the graph reads its inputs from
// a persistent device buffer that the upload refreshes, so a replay launches
// no kernel from the host and allocates nothing. Block tables in that buffer
// are column-major ([block, padded batch]), so a step uploads only the
// columns its longest sequence uses.
#include "runtime/internal/forward.h"

#ifdef GANTRY_WITH_CUDA_KERNELS
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/version.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/cuda/kernels.h"
#include "runtime/internal/cuda_kernel_dtype.h"
#include "runtime/internal/torch_util.h"
#endif

namespace gantry::runtime {

#ifdef GANTRY_WITH_CUDA_KERNELS
namespace {

// Decode steps of up to this many sequences read attention's lengths, block
// tables and older keys before its dependency wait
// (CudaForwardOptions::decode_attention_early_loads). H100, 8B-shaped bf16,
// runtime_bench --attention_early_loads=true/false alternating, two
// machines: batch 1 +1.0% and +0.4%, batch 2 +0.5%, batch 4 -0.2% and
// -0.7%: the earlier keys' reads then compete with the qkv product's tail.
constexpr int kEarlyAttentionLoadsMaxSeqs = 2;

const void* OptionalPtr(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// Byte offsets of one step's metadata in the packed buffer; the int64
// sections come first so every section is aligned.
struct PackedLayout {
  size_t slots = 0;        // int64 [tokens]
  size_t logit_rows = 0;   // int64 [rows]
  size_t token_ids = 0;    // int32 [tokens]
  size_t positions = 0;    // int32 [tokens]
  size_t seq_lens = 0;     // int32 [seqs]
  size_t query_start = 0;  // int32 [seqs + 1]
  size_t block_tables = 0; // int32 [table_entries]
  size_t end = 0;

  PackedLayout(int64_t tokens, int64_t seqs, int64_t table_entries, int64_t rows) {
    size_t offset = 0;
    auto take = [&offset](size_t bytes) {
      const size_t at = offset;
      offset += bytes;
      return at;
    };
    slots = take(8 * tokens);
    logit_rows = take(8 * rows);
    token_ids = take(4 * tokens);
    positions = take(4 * tokens);
    seq_lens = take(4 * seqs);
    query_start = take(4 * (seqs + 1));
    block_tables = take(4 * table_entries);
    end = offset;
  }
};

// Typed pointers to the sections of a packed buffer (the pinned host copy
// or its device twin).
struct PackedPointers {
  int64_t* slots;
  int64_t* logit_rows;
  int32_t* token_ids;
  int32_t* positions;
  int32_t* seq_lens;
  int32_t* query_start;
  int32_t* block_tables;

  PackedPointers(uint8_t* base, const PackedLayout& l)
      : slots(reinterpret_cast<int64_t*>(base + l.slots)),
        logit_rows(reinterpret_cast<int64_t*>(base + l.logit_rows)),
        token_ids(reinterpret_cast<int32_t*>(base + l.token_ids)),
        positions(reinterpret_cast<int32_t*>(base + l.positions)),
        seq_lens(reinterpret_cast<int32_t*>(base + l.seq_lens)),
        query_start(reinterpret_cast<int32_t*>(base + l.query_start)),
        block_tables(reinterpret_cast<int32_t*>(base + l.block_tables)) {}
};

// Device pointers of one forward pass.
struct StepView {
  int64_t num_tokens = 0;
  int num_seqs = 0;
  bool decode = false;     // one query per sequence, in row s
  int max_query_len = 0;
  int num_splits = 1;      // decode attention
  float* workspace = nullptr;  // decode attention's, counters zero; nullptr: RunView makes one
  at::Tensor token_ids;    // [num_tokens] int32
  at::Tensor logit_rows;   // [rows] int64; undefined: every row
  const int32_t* positions = nullptr;
  const int64_t* slots = nullptr;
  const int32_t* seq_lens = nullptr;
  const int32_t* query_start = nullptr;
  const int32_t* block_tables = nullptr;
  int64_t bt_seq_stride = 0, bt_block_stride = 1;
};

// Pinned host buffers that steps write their metadata into before the one
// upload, used in turn. A buffer is written again only once its last upload
// has run (its event): a step that does not wait for the device (a prompt
// chunk that samples nothing returns as soon as it is enqueued) leaves its
// upload queued behind the work before it, and the next step must not
// overwrite what that upload will read. With two buffers the host packs step
// N + 1 while step N's upload still waits; a third step waits for it.
class PinnedStaging {
 public:
  uint8_t* Reserve(size_t bytes) {
    Buffer& buffer = buffers_[next_];
    if (buffer.upload_pending) {
      buffer.uploaded.synchronize();
      buffer.upload_pending = false;
    }
    if (!buffer.host.defined() || static_cast<size_t>(buffer.host.numel()) < bytes) {
      buffer.host = at::empty({static_cast<int64_t>(std::max<size_t>(bytes, 4096) * 2)},
                              at::TensorOptions().dtype(at::kByte).pinned_memory(true));
    }
    return buffer.host.data_ptr<uint8_t>();
  }
  // One asynchronous copy of the first `bytes` of the buffer Reserve gave
  // into `device`, on the device's current stream; the next Reserve gives
  // the other buffer.
  void Upload(size_t bytes, at::Tensor& device) {
    Buffer& buffer = buffers_[next_];
    device.narrow(0, 0, static_cast<int64_t>(bytes))
        .copy_(buffer.host.narrow(0, 0, static_cast<int64_t>(bytes)), /*non_blocking=*/true);
    buffer.uploaded.record(c10::cuda::getCurrentCUDAStream(device.device().index()));
    buffer.upload_pending = true;
    next_ = (next_ + 1) % buffers_.size();
  }

 private:
  struct Buffer {
    at::Tensor host;  // [capacity] uint8, pinned
    at::cuda::CUDAEvent uploaded;  // recorded after its last upload
    bool upload_pending = false;
  };
  std::array<Buffer, 2> buffers_;
  size_t next_ = 0;
};

// Graph-capture streams: each held by one live CUDA forward at a time, and
// reused by later loads.
//
// Why not LibTorch's stream pool: LibTorch keeps a cuBLAS workspace per
// (handle, stream) for the whole process (32 MiB on the H100), and a captured
// graph embeds the address of its capture stream's workspace. The pool hands
// out its 32 streams per device in turn, so every load left one more
// workspace behind (up to 1 GiB per device, outside the memory budget), and
// after 32 loads two live models could capture on one stream, where resetting
// one model's graphs frees, in recent LibTorch releases
// (clearCublasWorkspacesForStream, pytorch/pytorch#193402), the workspace the
// other model's graphs still use. Streams here are made on demand, never
// destroyed, and never shared by two live forwards, so a swap reuses the
// stream (and workspace) the unloaded model left.
class CaptureStreamLease {
 public:
  CaptureStreamLease() = default;
  ~CaptureStreamLease() { Release(); }
  CaptureStreamLease(const CaptureStreamLease&) = delete;
  CaptureStreamLease& operator=(const CaptureStreamLease&) = delete;

  // A stream of `device` that no other lease holds.
  absl::StatusOr<c10::cuda::CUDAStream> Take(c10::DeviceIndex device) {
    Release();
    cudaStream_t stream = nullptr;
    {
      std::lock_guard<std::mutex> lock(Mutex());
      std::vector<cudaStream_t>& free = Free()[device];
      if (!free.empty()) {
        stream = free.back();
        free.pop_back();
      }
    }
    if (stream == nullptr) {
      c10::cuda::CUDAGuard guard(device);
      const cudaError_t error = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
      if (error != cudaSuccess) {
        return absl::ResourceExhaustedError(absl::StrCat("creating a graph-capture stream on cuda:", device,
                                                         " failed: ", cudaGetErrorString(error)));
      }
    }
    device_ = device;
    stream_ = stream;
    return c10::cuda::getStreamFromExternal(stream, device);
  }

 private:
  void Release() {
    if (stream_ == nullptr) return;
    std::lock_guard<std::mutex> lock(Mutex());
    Free()[device_].push_back(stream_);
    stream_ = nullptr;
  }
  static std::mutex& Mutex() {
    static auto* mutex = new std::mutex;  // never destroyed: leases may outlive main
    return *mutex;
  }
  static std::map<c10::DeviceIndex, std::vector<cudaStream_t>>& Free() {
    static auto* free = new std::map<c10::DeviceIndex, std::vector<cudaStream_t>>;
    return *free;
  }

  c10::DeviceIndex device_ = 0;
  cudaStream_t stream_ = nullptr;
};

class CudaForward final : public Forward {
 public:
  CudaForward(LlamaModel* model, const CudaForwardOptions& options)
      : model_(model), options_(options), dtype_(KernelDType(model->dtype())) {
    const ModelConfig& c = model_->config();
    sm_count_ = at::cuda::getDeviceProperties(model_->device().index())->multiProcessorCount;
    max_blocks_per_seq_ = (options_.max_context + options_.block_size - 1) / options_.block_size;
    const at::Tensor& cache = model_->kv_cache();  // [layers, 2, blocks, block_size, kv_heads, head_dim]
    cache_stride_bytes_ = static_cast<size_t>(cache.stride(1)) * cache.element_size();
    // The fused GEMV adds o and down into the residual stream itself, before
    // a sum over tensor-parallel ranks could happen.
    decode_gemv_ = options_.decode_gemv && model_->communicator() == nullptr && DecodeGemvFits(c, model_->weights());
    // The fused epilogue pairs 8-row halves of a head and has no per-head norm.
    gemv_rope_ = decode_gemv_ && options_.decode_gemv_rope && c.head_dim % 16 == 0 &&
                 !model_->weights().layers.front().q_norm.defined();
  }

  absl::Status CaptureGraphs() {
    if (options_.max_graph_batch <= 0) return absl::OkStatus();
    std::vector<int64_t> sizes;
    for (int64_t b = 1; b < options_.max_graph_batch; b *= 2) sizes.push_back(b);
    sizes.push_back(options_.max_graph_batch);
    const int64_t largest = sizes.back();
    // Slack behind the tables for ForwardBatch::extra when every column is used.
    graph_inputs_ = at::zeros({static_cast<int64_t>(GraphLayout(largest).end + (64 << 10))},
                              at::TensorOptions().dtype(at::kByte).device(model_->device()));
    c10::cuda::CUDAGuard device_guard(model_->device());
    // Graphs are captured on a side stream (CUDA forbids capturing the legacy
    // default stream), largest first so the smaller ones fit in the memory
    // pool the largest leaves behind; all share that pool, which is safe as
    // they are replayed one at a time on one stream.
    auto leased = capture_stream_.Take(model_->device().index());
    if (!leased.ok()) return leased.status();
    c10::cuda::CUDAStream capture_stream = *leased;
    // MempoolId_t moved between LibTorch versions; take it from pool().
    decltype(std::declval<at::cuda::CUDAGraph&>().pool()) pool{0, 0};
    try {
      c10::cuda::CUDAStreamGuard stream_guard(capture_stream);
      for (auto it = sizes.rbegin(); it != sizes.rend(); ++it) {
        const int64_t batch = *it;
        // The graph's own decode-attention workspace, zeroed once here: the
        // kernel leaves its split counters at zero after every launch, so
        // every replay (and every layer within one) starts clean.
        const int splits = DecodeSplits(batch);
        if (splits > 1) graph_workspaces_[batch] = DecodeWorkspace(static_cast<int>(batch), splits);
        WritePaddingInputs(batch);
        // A warm-up run outside the capture: cuBLAS handles and workspaces,
        // lazy module loading and the allocator's first blocks.
        (void)RunView(GraphView(batch));
        capture_stream.synchronize();
        auto graph = std::make_unique<DecodeGraph>();
        graph->batch = batch;
#if TORCH_VERSION_MAJOR >= 2
        // Thread-local capture: other models' engine threads keep running
        // their own steps while this one captures.
        graph->graph.capture_begin(pool, cudaStreamCaptureModeThreadLocal);
#else
        graph->graph.capture_begin(pool);
#endif
        graph->logits = RunView(GraphView(batch));
        graph->graph.capture_end();
        pool = graph->graph.pool();
        graphs_.emplace(batch, std::move(graph));
      }
      capture_stream.synchronize();
    } catch (const std::exception& e) {
      graphs_.clear();
      graph_workspaces_.clear();
      return absl::InternalError(absl::StrCat("capturing CUDA graphs failed: ", ErrorText(e)));
    }
    return absl::OkStatus();
  }

  // One eager prompt step of each size 16, 32, ... up to warm_step_tokens:
  // cuBLAS chooses (and the driver loads) its kernels per shape on first use,
  // and the allocator grows to the largest step, here rather than in the
  // first requests. The steps write block 0 of the cache, which no sequence
  // holds yet.
  absl::Status WarmUp() {
    try {
      for (int64_t tokens = 16; tokens <= options_.warm_step_tokens; tokens *= 2) {
        std::vector<int32_t> table(BlocksFor(tokens), 0);
        ForwardBatch batch;
        batch.sequences.push_back({0, tokens, table});
        batch.token_ids.assign(tokens, 0);
        batch.logit_rows = {tokens - 1};
        (void)Run(batch);
      }
      c10::cuda::getCurrentCUDAStream(model_->device().index()).synchronize();
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("warming up the CUDA forward failed: ", ErrorText(e)));
    }
    return absl::OkStatus();
  }

  ForwardOutput Run(const ForwardBatch& batch) override {
    c10::cuda::CUDAGuard device_guard(model_->device());
    const int64_t num_seqs = static_cast<int64_t>(batch.sequences.size());
    bool decode = true;
    for (const BatchSequence& s : batch.sequences) decode &= s.num_new == 1;
    bool every_row = static_cast<int64_t>(batch.logit_rows.size()) == num_seqs;
    for (int64_t i = 0; every_row && i < num_seqs; ++i) every_row = batch.logit_rows[i] == i;
    if (decode && every_row) {
      auto graph = graphs_.lower_bound(num_seqs);
      if (graph != graphs_.end()) return ReplayGraph(*graph->second, batch);
    }
    return RunEager(batch, decode);
  }

  std::string Describe() const override {
    const std::string gemv =
        decode_gemv_ ? absl::StrCat(" (fused GEMV for decode batches up to ", cuda::kDecodeGemvMaxRows,
                                    gemv_rope_ ? ", rope fused" : "",
                                    options_.decode_gemv_l2_prefetch_units > 0
                                        ? absl::StrCat(", o prefetched into L2 during attention (",
                                                       options_.decode_gemv_l2_prefetch_units, " units a block)")
                                        : "",
                                    ")")
                     : "";
    if (graphs_.empty()) return absl::StrCat("cuda kernels", gemv);
    return absl::StrCat("cuda kernels", gemv, ", CUDA graphs for decode batches up to ", graphs_.rbegin()->first);
  }

 private:
  struct DecodeGraph {
    int64_t batch = 0;
    at::cuda::CUDAGraph graph;
    at::Tensor logits;  // [batch, vocab] float32, rewritten by every replay
  };

  PackedLayout GraphLayout(int64_t batch) const {
    return PackedLayout(batch, batch, max_blocks_per_seq_ * batch, 0);
  }

  // The packed inputs of `batch`'s sequences (and `padded - size` padding
  // rows, which write no cache and attend to nothing), with block j of
  // sequence s at tables[s * bt_seq_stride + j * bt_block_stride]. Logit
  // rows are the caller's.
  void Pack(const ForwardBatch& batch, int64_t padded, int64_t bt_seq_stride, int64_t bt_block_stride,
            const PackedPointers& out) const {
    const int64_t num_seqs = static_cast<int64_t>(batch.sequences.size());
    const int64_t block_size = options_.block_size;
    int64_t row = 0;
    for (int64_t s = 0; s < padded; ++s) {
      out.query_start[s] = static_cast<int32_t>(row);
      if (s >= num_seqs) {  // a padding row
        out.slots[row] = -1;
        out.token_ids[row] = 0;
        out.positions[row] = 0;
        out.seq_lens[s] = 0;
        ++row;
        continue;
      }
      const BatchSequence& seq = batch.sequences[s];
      const absl::Span<const int32_t> table = seq.block_table;
      for (int64_t p = seq.num_computed; p < seq.num_computed + seq.num_new; ++p, ++row) {
        out.slots[row] = static_cast<int64_t>(table[p / block_size]) * block_size + p % block_size;
        out.token_ids[row] = static_cast<int32_t>(batch.token_ids[row]);
        out.positions[row] = static_cast<int32_t>(p);
      }
      const int64_t context = seq.num_computed + seq.num_new;
      out.seq_lens[s] = static_cast<int32_t>(context);
      for (int64_t j = 0; j < BlocksFor(context); ++j) out.block_tables[s * bt_seq_stride + j * bt_block_stride] = table[j];
    }
    out.query_start[padded] = static_cast<int32_t>(row);
  }

  // A view of the packed inputs at `base` (on the device).
  StepView View(uint8_t* base, const at::Tensor& buffer, const PackedLayout& layout, int64_t num_tokens,
                int64_t num_seqs, int64_t num_rows) const {
    const PackedPointers p(base, layout);
    StepView view;
    view.num_tokens = num_tokens;
    view.num_seqs = static_cast<int>(num_seqs);
    view.token_ids = buffer.narrow(0, layout.token_ids, 4 * num_tokens).view(at::kInt);
    // Decode steps want every row; prompt steps only their last tokens'.
    if (num_rows != num_tokens) view.logit_rows = buffer.narrow(0, layout.logit_rows, 8 * num_rows).view(at::kLong);
    view.positions = p.positions;
    view.slots = p.slots;
    view.seq_lens = p.seq_lens;
    view.query_start = p.query_start;
    view.block_tables = p.block_tables;
    return view;
  }

  // The captured graph of `batch` reads its inputs here: block tables
  // column-major, so a step uploads only the columns it uses.
  StepView GraphView(int64_t batch) {
    StepView view = View(graph_inputs_.data_ptr<uint8_t>(), graph_inputs_, GraphLayout(batch), batch, batch, batch);
    view.decode = true;
    view.max_query_len = 1;
    view.num_splits = DecodeSplits(batch);
    view.bt_seq_stride = 1;
    view.bt_block_stride = batch;
    if (auto it = graph_workspaces_.find(batch); it != graph_workspaces_.end()) {
      view.workspace = it->second.data_ptr<float>();
    }
    return view;
  }

  // A zeroed decode-attention workspace ([bytes / 4] float32) for batches of num_seqs.
  at::Tensor DecodeWorkspace(int num_seqs, int num_splits) const {
    const ModelConfig& c = model_->config();
    const size_t bytes = cuda::DecodeAttentionWorkspaceBytes(num_seqs, static_cast<int>(c.num_heads),
                                                             static_cast<int>(c.head_dim), num_splits);
    return at::zeros({static_cast<int64_t>(bytes / sizeof(float))},
                     at::TensorOptions().dtype(at::kFloat).device(model_->device()));
  }

  // Inputs that make every row padding: no cache write, zero attention.
  void WritePaddingInputs(int64_t batch) {
    const PackedLayout layout = GraphLayout(batch);
    uint8_t* host = staging_.Reserve(layout.block_tables);
    Pack(ForwardBatch{}, batch, 1, batch, PackedPointers(host, layout));
    staging_.Upload(layout.block_tables, graph_inputs_);
  }

  // Where ForwardBatch::extra goes in a packed upload: behind the `used`
  // bytes, when it fits in `capacity`.
  struct ExtraPlacement {
    size_t offset = 0;  // 0: not uploaded here
    size_t end = 0;     // bytes to upload in all
  };
  static ExtraPlacement PlaceExtra(const ForwardBatch& batch, size_t used, size_t capacity) {
    const size_t bytes = batch.extra != nullptr ? batch.extra->size() * sizeof(float) : 0;
    const size_t offset = (used + 15) / 16 * 16;
    if (bytes == 0 || offset + bytes > capacity) return {0, used};
    return {offset, offset + bytes};
  }
  static void CopyExtra(const ForwardBatch& batch, const ExtraPlacement& place, uint8_t* host) {
    if (place.offset > 0) std::memcpy(host + place.offset, batch.extra->data(), place.end - place.offset);
  }
  static at::Tensor ExtraView(const at::Tensor& device, const ExtraPlacement& place) {
    if (place.offset == 0) return at::Tensor();
    return device.narrow(0, place.offset, place.end - place.offset).view(at::kFloat);
  }

  ForwardOutput ReplayGraph(DecodeGraph& graph, const ForwardBatch& batch) {
    const int64_t padded = graph.batch;
    int64_t used_blocks = 1;
    for (const BatchSequence& s : batch.sequences) {
      used_blocks = std::max<int64_t>(used_blocks, BlocksFor(s.num_computed + s.num_new));
    }
    const PackedLayout layout = GraphLayout(padded);
    // The extra lands in block-table columns past the used ones, which the
    // graph does not read (or in the slack behind the tables).
    const ExtraPlacement extra = PlaceExtra(batch, layout.block_tables + 4 * static_cast<size_t>(used_blocks * padded),
                                            static_cast<size_t>(graph_inputs_.numel()));
    uint8_t* host = staging_.Reserve(extra.end);
    Pack(batch, padded, 1, padded, PackedPointers(host, layout));  // logits: every row
    CopyExtra(batch, extra, host);
    staging_.Upload(extra.end, graph_inputs_);
    FillPendingTokens(batch, graph_inputs_.narrow(0, static_cast<int64_t>(layout.token_ids), 4 * padded).view(at::kInt));
    graph.graph.replay();
    return {graph.logits.narrow(0, 0, static_cast<int64_t>(batch.sequences.size())), ExtraView(graph_inputs_, extra)};
  }

  ForwardOutput RunEager(const ForwardBatch& batch, bool decode) {
    const int64_t num_seqs = static_cast<int64_t>(batch.sequences.size());
    const int64_t num_tokens = static_cast<int64_t>(batch.token_ids.size());
    const int64_t num_rows = static_cast<int64_t>(batch.logit_rows.size());
    int64_t width = 1;  // block-table columns: the longest sequence's blocks
    int max_query = 0;
    for (const BatchSequence& s : batch.sequences) {
      width = std::max<int64_t>(width, BlocksFor(s.num_computed + s.num_new));
      max_query = std::max<int>(max_query, static_cast<int>(s.num_new));
    }
    const PackedLayout layout(num_tokens, num_seqs, width * num_seqs, num_rows);
    const ExtraPlacement extra = PlaceExtra(batch, layout.end, SIZE_MAX);
    uint8_t* staged = staging_.Reserve(extra.end);
    const PackedPointers host(staged, layout);
    Pack(batch, num_seqs, width, 1, host);
    std::copy(batch.logit_rows.begin(), batch.logit_rows.end(), host.logit_rows);
    CopyExtra(batch, extra, staged);
    if (!eager_inputs_.defined() || static_cast<size_t>(eager_inputs_.numel()) < extra.end) {
      eager_inputs_ = at::empty({static_cast<int64_t>(extra.end * 2)},
                                at::TensorOptions().dtype(at::kByte).device(model_->device()));
    }
    staging_.Upload(extra.end, eager_inputs_);
    StepView view = View(eager_inputs_.data_ptr<uint8_t>(), eager_inputs_, layout, num_tokens, num_seqs, num_rows);
    view.decode = decode;
    view.max_query_len = max_query;
    view.num_splits = decode ? DecodeSplits(num_seqs) : 1;
    view.bt_seq_stride = width;
    view.bt_block_stride = 1;
    FillPendingTokens(batch, view.token_ids);
    return {RunView(view), ExtraView(eager_inputs_, extra)};
  }

  // Rotary embedding and the cache write of layer l, from qkv [tokens, (heads + 2 kv_heads) * head_dim] into q.
  // `qkv`: the projection's output, or null when DecodeGemv's kRopeCache
  // epilogue does the work.
  cuda::RopeCacheArgs RopeArgs(const StepView& view, int64_t l, const void* qkv, const at::Tensor& q) const {
    const ModelConfig& c = model_->config();
    const LayerWeights& lw = model_->weights().layers[l];
    cuda::RopeCacheArgs rope;
    rope.dtype = dtype_;
    rope.num_tokens = view.num_tokens;
    rope.num_heads = static_cast<int>(c.num_heads);
    rope.num_kv_heads = static_cast<int>(c.num_kv_heads);
    rope.head_dim = static_cast<int>(c.head_dim);
    rope.qkv = qkv;
    rope.positions = view.positions;
    rope.slot_mapping = view.slots;
    rope.inv_freq = model_->inv_freq().data_ptr<float>();
    rope.q_norm = OptionalPtr(lw.q_norm);
    rope.k_norm = OptionalPtr(lw.k_norm);
    rope.norm_eps = static_cast<float>(c.rms_norm_eps);
    rope.q_out = q.data_ptr();
    rope.k_cache = Cache(l, 0);
    rope.v_cache = Cache(l, 1);
    return rope;
  }

  // Context splits of a decode step's attention. A sequence's result depends
  // on how many splits its context is cut into, so decode batches that
  // DecodeGemv takes (batch-invariant projections) all take batch 1's count:
  // a row's logits then do not depend on the batch beside it at all.
  int DecodeSplits(int64_t num_seqs) const {
    const int64_t as_if = decode_gemv_ && num_seqs <= cuda::kDecodeGemvMaxRows ? 1 : num_seqs;
    return cuda::ChooseDecodeSplits(static_cast<int>(as_if), model_->config().num_kv_heads, sm_count_);
  }

  int64_t BlocksFor(int64_t tokens) const { return (tokens + options_.block_size - 1) / options_.block_size; }

  void* Cache(int64_t layer, int which) const {  // which: 0 keys, 1 values
    return static_cast<uint8_t*>(model_->kv_cache().data_ptr()) + (2 * layer + which) * cache_stride_bytes_;
  }

  // x [rows, k] W^T + bias -> [rows, n]: cuBLAS, or Gantry's skinny kernel
  // for the few rows of a small decode batch when asked.
  at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, cudaStream_t stream) const {
    const int64_t rows = x.size(0);
    if (!options_.skinny_gemm || rows < 1 || rows > cuda::kSkinnyGemmMaxRows) return at::linear(x, weight, bias);
    at::Tensor y = at::empty({rows, weight.size(0)}, x.options());
    cuda::SkinnyGemmArgs args;
    args.dtype = dtype_;
    args.m = static_cast<int>(rows);
    args.n = weight.size(0);
    args.k = weight.size(1);
    args.x = x.data_ptr();
    args.w = weight.data_ptr();
    args.bias = OptionalPtr(bias);
    args.y = y.data_ptr();
    ThrowIfError(cuda::SkinnyGemm(args, stream));
    return y;
  }

  // Whether every projection of the model can go through DecodeGemv: 16-bit
  // weights, input widths it takes, 16-byte aligned tensors.
  bool DecodeGemvFits(const ModelConfig& c, const ModelWeights& w) const {
    auto aligned = [](const at::Tensor& t) {
      return !t.defined() || reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
    };
    if (!c.has_lm_head) return false;  // its fused logits are the lm_head product
    if (!cuda::DecodeGemvSupports(dtype_, c.hidden_size) || !cuda::DecodeGemvSupports(dtype_, c.intermediate_size) ||
        !cuda::DecodeGemvSupports(dtype_, c.num_heads * c.head_dim) || !aligned(w.lm_head) || !aligned(w.final_norm)) {
      return false;
    }
    for (const LayerWeights& lw : w.layers) {
      for (const at::Tensor* t : {&lw.input_norm, &lw.qkv_proj, &lw.o_proj, &lw.post_norm, &lw.gate_up_proj,
                                  &lw.down_proj}) {
        if (!aligned(*t)) return false;
      }
    }
    return true;
  }

  // rows x [rows, k] through `weight` [n, k] into y (see cuda::GemvOutput).
  void Gemv(int64_t rows, const at::Tensor& weight, const at::Tensor& bias, const void* x,
            const at::Tensor& norm_weight, cuda::GemvOutput output, void* y, cudaStream_t stream,
            const cuda::RopeCacheArgs* rope = nullptr, int l2_prefetch_units = 0) const {
    cuda::DecodeGemvArgs args;
    args.dtype = dtype_;
    args.rows = rows;
    args.n = weight.size(0);
    args.k = weight.size(1);
    args.w = weight.data_ptr();
    args.bias = OptionalPtr(bias);
    args.x = x;
    args.norm_weight = OptionalPtr(norm_weight);
    args.eps = static_cast<float>(model_->config().rms_norm_eps);
    args.output = output;
    args.y = y;
    args.rope = rope;
    args.l2_prefetch_units = l2_prefetch_units;
    ThrowIfError(cuda::DecodeGemv(args, stream));
  }

  // The forward pass over `view`; returns [rows, vocab] float32 logits.
  at::Tensor RunView(const StepView& view) {
    const ModelConfig& c = model_->config();
    const ModelWeights& w = model_->weights();
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream(model_->device().index()).stream();
    const int64_t tokens = view.num_tokens;
    const int64_t heads = c.num_heads, kv_heads = c.num_kv_heads, head_dim = c.head_dim;
    const int64_t hidden_size = c.hidden_size, inter = c.intermediate_size;
    const float eps = static_cast<float>(c.rms_norm_eps);
    auto options = w.embed_tokens.options();

    at::Tensor hidden = w.embed_tokens.index_select(0, view.token_ids);  // [tokens, hidden]: the residual stream
    at::Tensor x = at::empty({tokens, hidden_size}, options);            // [tokens, hidden] normalised
    at::Tensor q = at::empty({tokens, heads, head_dim}, options);
    at::Tensor attention = at::empty({tokens, heads * head_dim}, options);
    at::Tensor act = at::empty({tokens, inter}, options);
    // Eager decode steps take a fresh zeroed workspace (one fill; its shape
    // changes from step to step); graphs bring their own (GraphView).
    at::Tensor workspace;
    float* workspace_ptr = view.workspace;
    if (view.decode && view.num_splits > 1 && workspace_ptr == nullptr) {
      workspace = DecodeWorkspace(view.num_seqs, view.num_splits);
      workspace_ptr = workspace.data_ptr<float>();
    }
    at::Tensor mlp_out;  // [tokens, hidden] the previous layer's MLP output, not yet added to `hidden`

    cuda::PagedAttentionArgs attn;
    attn.dtype = dtype_;
    attn.num_seqs = view.num_seqs;
    attn.num_tokens = tokens;
    attn.num_heads = static_cast<int>(heads);
    attn.num_kv_heads = static_cast<int>(kv_heads);
    attn.head_dim = static_cast<int>(head_dim);
    attn.block_size = static_cast<int>(options_.block_size);
    attn.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
    attn.sliding_window = static_cast<int>(c.sliding_window);
    attn.q = q.data_ptr();
    attn.out = attention.data_ptr();
    attn.block_tables = view.block_tables;
    attn.bt_seq_stride = view.bt_seq_stride;
    attn.bt_block_stride = view.bt_block_stride;
    attn.seq_lens = view.seq_lens;
    attn.query_start = view.query_start;
    attn.max_query_len = view.max_query_len;
    attn.num_splits = view.num_splits;
    attn.workspace = workspace_ptr;
    // Decode steps write q and each sequence's new key just before attention
    // (RopeAndCacheWrite or qkv's kRopeCache epilogue), nothing else it reads.
    // Only small steps read the rest early: there the early keys are a few
    // hundred KB against the qkv product's tens of MB.
    attn.prior_writes_last_key_only =
        view.decode && options_.decode_attention_early_loads && view.num_seqs <= kEarlyAttentionLoadsMaxSeqs;

    // A decode step of up to 4 rows wanting every row's logits: every projection
    // through DecodeGemv, the norms and SiLU fused into them, the residual
    // stream updated in place by o and down. Its rows are batch-invariant, so
    // each is computed as it would be alone.
    const bool gemv = decode_gemv_ && view.decode && tokens <= cuda::kDecodeGemvMaxRows && !view.logit_rows.defined();
    at::Tensor qkv_rows;  // [tokens, (heads + 2 kv_heads) * head_dim] (gemv, rope apart)
    if (gemv && !gemv_rope_) qkv_rows = at::empty({tokens, (heads + 2 * kv_heads) * head_dim}, options);

    for (int64_t l = 0; l < c.num_layers; ++l) {
      const LayerWeights& lw = w.layers[l];
      if (gemv) {
        if (gemv_rope_) {
          const cuda::RopeCacheArgs rope = RopeArgs(view, l, nullptr, q);
          Gemv(tokens, lw.qkv_proj, lw.qkv_bias, hidden.data_ptr(), lw.input_norm, cuda::GemvOutput::kRopeCache,
               nullptr, stream, &rope);
        } else {
          Gemv(tokens, lw.qkv_proj, lw.qkv_bias, hidden.data_ptr(), lw.input_norm, cuda::GemvOutput::kStore,
               qkv_rows.data_ptr(), stream);
          ThrowIfError(cuda::RopeAndCacheWrite(RopeArgs(view, l, qkv_rows.data_ptr(), q), stream));
        }
        attn.k_cache = Cache(l, 0);
        attn.v_cache = Cache(l, 1);
        ThrowIfError(cuda::DecodeAttention(attn, stream));
        // o's weights stream into L2 while attention runs (opt-in).
        Gemv(tokens, lw.o_proj, lw.o_bias, attention.data_ptr(), at::Tensor(), cuda::GemvOutput::kAddToResidual,
             hidden.data_ptr(), stream, nullptr, options_.decode_gemv_l2_prefetch_units);
        Gemv(tokens, lw.gate_up_proj, lw.gate_up_bias, hidden.data_ptr(), lw.post_norm, cuda::GemvOutput::kSiluMul,
             act.data_ptr(), stream);
        Gemv(tokens, lw.down_proj, lw.down_bias, act.data_ptr(), at::Tensor(), cuda::GemvOutput::kAddToResidual,
             hidden.data_ptr(), stream);
        continue;
      }
      cuda::RmsNormArgs norm;
      norm.dtype = dtype_;
      norm.rows = tokens;
      norm.dim = hidden_size;
      norm.eps = eps;
      norm.input = l == 0 ? hidden.data_ptr() : mlp_out.data_ptr();
      norm.residual = l == 0 ? nullptr : hidden.data_ptr();
      norm.weight = lw.input_norm.data_ptr();
      norm.output = x.data_ptr();
      ThrowIfError(cuda::RmsNorm(norm, stream));

      at::Tensor qkv = Linear(x, lw.qkv_proj, lw.qkv_bias, stream);  // [tokens, (heads + 2 kv_heads) * head_dim]
      ThrowIfError(cuda::RopeAndCacheWrite(RopeArgs(view, l, qkv.data_ptr(), q), stream));

      attn.k_cache = Cache(l, 0);
      attn.v_cache = Cache(l, 1);
      ThrowIfError(view.decode ? cuda::DecodeAttention(attn, stream) : cuda::PrefillAttention(attn, stream));

      at::Tensor o = Linear(attention, lw.o_proj, lw.o_bias, stream);  // [tokens, hidden]
      model_->SumOverRanks(o);
      norm.input = o.data_ptr();
      norm.residual = hidden.data_ptr();
      norm.weight = lw.post_norm.data_ptr();
      ThrowIfError(cuda::RmsNorm(norm, stream));

      at::Tensor gate_up = Linear(x, lw.gate_up_proj, lw.gate_up_bias, stream);  // [tokens, 2 * inter]
      cuda::SiluMulArgs silu;
      silu.dtype = dtype_;
      silu.rows = tokens;
      silu.dim = inter;
      silu.gate_up = gate_up.data_ptr();
      silu.output = act.data_ptr();
      ThrowIfError(cuda::SiluMul(silu, stream));
      mlp_out = Linear(act, lw.down_proj, lw.down_bias, stream);
      model_->SumOverRanks(mlp_out);
    }

    if (gemv) {
      at::Tensor logits = at::empty({tokens, c.vocab_size}, options.dtype(at::kFloat));
      Gemv(tokens, w.lm_head, at::Tensor(), hidden.data_ptr(), w.final_norm, cuda::GemvOutput::kFloat32, logits.data_ptr(),
           stream);
      return logits;
    }
    // The last residual add and the final norm, on the rows that need logits.
    at::Tensor residual = hidden, last = mlp_out;
    if (view.logit_rows.defined()) {
      residual = residual.index_select(0, view.logit_rows);
      if (last.defined()) last = last.index_select(0, view.logit_rows);
    }
    at::Tensor normed = at::empty_like(residual);
    cuda::RmsNormArgs final_norm;
    final_norm.dtype = dtype_;
    final_norm.rows = residual.size(0);
    final_norm.dim = hidden_size;
    final_norm.eps = eps;
    final_norm.input = last.defined() ? last.data_ptr() : residual.data_ptr();
    final_norm.residual = last.defined() ? residual.data_ptr() : nullptr;
    final_norm.weight = w.final_norm.data_ptr();
    final_norm.output = normed.data_ptr();
    ThrowIfError(cuda::RmsNorm(final_norm, stream));
    if (!c.has_lm_head) return normed.to(at::kFloat);  // a bare transformer's output: the hidden states
    return model_->FullLogits(Linear(normed, w.lm_head, at::Tensor(), stream));
  }

  LlamaModel* model_;
  CudaForwardOptions options_;
  cuda::DType dtype_;
  int sm_count_ = 1;
  bool decode_gemv_ = false;  // small decode batches through DecodeGemv (options and model allow)
  bool gemv_rope_ = false;    // and their rope + cache write in its qkv epilogue
  int64_t max_blocks_per_seq_ = 1;
  size_t cache_stride_bytes_ = 0;  // bytes between layer l's keys and its values
  PinnedStaging staging_;
  at::Tensor eager_inputs_;  // [capacity] uint8 on the device, the eager steps' metadata
  at::Tensor graph_inputs_;  // [capacity] uint8 on the device, read by the captured graphs
  CaptureStreamLease capture_stream_;  // before graphs_: given back only once they are destroyed
  std::map<int64_t, std::unique_ptr<DecodeGraph>> graphs_;  // by padded batch size
  std::map<int64_t, at::Tensor> graph_workspaces_;  // by padded batch size: each graph's decode-attention workspace
};

}  // namespace

bool HaveCudaKernels() { return true; }

absl::StatusOr<std::unique_ptr<Forward>> MakeCudaForward(LlamaModel* model, const CudaForwardOptions& options) {
  if (!model->device().is_cuda()) return absl::InvalidArgumentError("the CUDA forward needs a CUDA model");
  try {
    auto forward = std::make_unique<CudaForward>(model, options);
    if (auto status = forward->WarmUp(); !status.ok()) return status;
    if (auto status = forward->CaptureGraphs(); !status.ok()) return status;
    return std::unique_ptr<Forward>(std::move(forward));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("setting up the CUDA forward failed: ", ErrorText(e)));
  }
}

#else  // !GANTRY_WITH_CUDA_KERNELS

bool HaveCudaKernels() { return false; }

absl::StatusOr<std::unique_ptr<Forward>> MakeCudaForward(LlamaModel*, const CudaForwardOptions&) {
  return absl::UnimplementedError("this build has no CUDA kernels (CPU LibTorch or no nvcc)");
}

#endif  // GANTRY_WITH_CUDA_KERNELS

}  // namespace gantry::runtime
