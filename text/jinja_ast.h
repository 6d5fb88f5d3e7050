// Jinja syntax tree and the evaluation context (text/jinja.h).
#ifndef GANTRY_TEXT_JINJA_AST_H_
#define GANTRY_TEXT_JINJA_AST_H_

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja_value.h"

namespace gantry::text::jinja {

class Context;

struct Expr {
  explicit Expr(int line) : line(line) {}
  virtual ~Expr() = default;
  virtual Value Eval(Context& ctx) const = 0;
  int line;
};
using ExprPtr = std::unique_ptr<Expr>;

struct CallArgs {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keywords;
  Arguments Eval(Context& ctx) const;
};

struct Stmt {
  explicit Stmt(int line) : line(line) {}
  virtual ~Stmt() = default;
  virtual void Exec(Context& ctx, std::string* out) const = 0;
  int line;
};
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// Variables in nested scopes: [0] render arguments and globals, [1] the
// template's top level, then one per for-loop body or macro call.
class Context {
 public:
  Context();
  Value Lookup(const std::string& name) const;
  void Set(const std::string& name, Value value) { scopes_.back()[name] = std::move(value); }
  void SetGlobal(const std::string& name, Value value) { scopes_.front()[name] = std::move(value); }
  void Push() { scopes_.emplace_back(); }
  void Pop() { scopes_.pop_back(); }
  // Macros see the globals and the template's top level only. A call
  // nested deeper than kMaxMacroDepth (a recursive macro) is an Error at
  // `line`: each level recurses in the evaluator, which would otherwise
  // overflow the stack.
  static constexpr int kMaxMacroDepth = 64;
  // No string a template builds, and not its output, may exceed this: a
  // template (or the messages it repeats) cannot make the server build a
  // prompt of hundreds of megabytes before the context check refuses it.
  static constexpr size_t kMaxStringBytes = 8 << 20;
  static void CheckSize(double bytes, int line);  // double: a repeat count times a size cannot wrap
  std::vector<std::map<std::string, Value>> EnterMacro(int line);
  void LeaveMacro(std::vector<std::map<std::string, Value>> saved) {
    scopes_ = std::move(saved);
    --macro_depth_;
  }

  enum class LoopSignal { kNone, kBreak, kContinue };
  LoopSignal signal = LoopSignal::kNone;

 private:
  std::vector<std::map<std::string, Value>> scopes_;
  int macro_depth_ = 0;
};

void ExecBody(const Body& body, Context& ctx, std::string* out);

// Expressions
struct Literal : Expr {
  Literal(Value v, int line) : Expr(line), value(std::move(v)) {}
  Value Eval(Context&) const override { return value; }
  Value value;
};
struct Name : Expr {
  Name(std::string n, int line) : Expr(line), name(std::move(n)) {}
  Value Eval(Context& ctx) const override { return ctx.Lookup(name); }
  std::string name;
};
struct ListExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  std::vector<ExprPtr> items;
};
struct DictExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
};
struct Attribute : Expr {
  Attribute(ExprPtr o, std::string n, int line) : Expr(line), object(std::move(o)), name(std::move(n)) {}
  Value Eval(Context& ctx) const override;
  ExprPtr object;
  std::string name;
};
struct Subscript : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  ExprPtr object;
  ExprPtr index;                    // plain subscript
  bool is_slice = false;
  ExprPtr start, stop, step;        // slice parts, each optional
};
struct Call : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  ExprPtr callee;
  CallArgs args;
};
struct FilterExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  ExprPtr input;
  std::string name;
  CallArgs args;
};
struct TestExpr : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  ExprPtr input;
  std::string name;
  CallArgs args;
  bool negated = false;
};
struct Unary : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  std::string op;
  ExprPtr operand;
};
struct Binary : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  std::string op;
  ExprPtr left, right;
};
struct Conditional : Expr {
  using Expr::Expr;
  Value Eval(Context& ctx) const override;
  ExprPtr condition, then_value, else_value;  // else_value may be null
};

// Statements
struct TextStmt : Stmt {
  TextStmt(std::string t, int line) : Stmt(line), text(std::move(t)) {}
  void Exec(Context&, std::string* out) const override { *out += text; }
  std::string text;
};
struct OutputStmt : Stmt {
  using Stmt::Stmt;
  void Exec(Context& ctx, std::string* out) const override;
  ExprPtr expr;
};
struct IfStmt : Stmt {
  using Stmt::Stmt;
  void Exec(Context& ctx, std::string* out) const override;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body else_body;
};
struct ForStmt : Stmt {
  using Stmt::Stmt;
  void Exec(Context& ctx, std::string* out) const override;
  std::vector<std::string> targets;
  ExprPtr iterable;
  ExprPtr filter;  // optional "if" clause
  Body body, else_body;
};
struct SetStmt : Stmt {
  using Stmt::Stmt;
  void Exec(Context& ctx, std::string* out) const override;
  std::vector<std::string> targets;  // one name, several to unpack, or "ns" with attribute
  std::string attribute;             // set ns.attribute = ...
  ExprPtr value;                     // or a block body
  Body body;
};
struct MacroStmt : Stmt {
  using Stmt::Stmt;
  void Exec(Context& ctx, std::string* out) const override;
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // default may be null
  Body body;
};
struct LoopControlStmt : Stmt {
  LoopControlStmt(bool is_break, int line) : Stmt(line), is_break(is_break) {}
  void Exec(Context& ctx, std::string*) const override {
    ctx.signal = is_break ? Context::LoopSignal::kBreak : Context::LoopSignal::kContinue;
  }
  bool is_break;
};

// Filter and test names the interpreter implements (checked at parse time).
bool IsKnownFilter(const std::string& name);
bool IsKnownTest(const std::string& name);

}  // namespace gantry::text::jinja

#endif  // GANTRY_TEXT_JINJA_AST_H_
