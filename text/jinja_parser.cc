#include "text/jinja_parser.h"

#include <set>

#include "absl/strings/str_cat.h"

namespace gantry::text::jinja {
namespace {

using Type = Token::Type;

// Nesting deeper than this (parentheses, brackets, unary operators,
// statements inside statements) is refused: the parser recurses once per
// level, and a hostile template could otherwise overflow the stack.
constexpr int kMaxNesting = 200;

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : tokens_(tokens) {}

  Body ParseTemplate() {
    Body body = ParseBody({});
    if (Peek().type != Type::kEnd) Fail(absl::StrCat("unexpected {% ", Peek(1).text, " %}"));
    return body;
  }

 private:
  // Counts one level of nesting for as long as it lives.
  class Nested {
   public:
    explicit Nested(Parser* parser) : parser_(parser) {
      if (++parser_->depth_ > kMaxNesting) {
        parser_->Fail(absl::StrCat("template nested deeper than ", kMaxNesting, " levels"));
      }
    }
    ~Nested() { --parser_->depth_; }
    Nested(const Nested&) = delete;
    Nested& operator=(const Nested&) = delete;

   private:
    Parser* parser_;
  };

  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  const Token& Next() { return tokens_[std::min(pos_++, tokens_.size() - 1)]; }
  [[noreturn]] void Fail(const std::string& message) const { throw Error(message, Peek().line); }
  bool IsOp(const std::string& op, size_t ahead = 0) const {
    return Peek(ahead).type == Type::kOperator && Peek(ahead).text == op;
  }
  bool IsName(const std::string& name, size_t ahead = 0) const {
    return Peek(ahead).type == Type::kName && Peek(ahead).text == name;
  }
  void ExpectOp(const std::string& op) {
    if (!IsOp(op)) Fail(absl::StrCat("expected '", op, "', found '", Peek().text, "'"));
    ++pos_;
  }
  void Expect(Type type, const char* what) {
    if (Peek().type != type) Fail(absl::StrCat("expected ", what));
    ++pos_;
  }
  std::string ExpectName() {
    if (Peek().type != Type::kName) Fail(absl::StrCat("expected a name, found '", Peek().text, "'"));
    return Next().text;
  }

  // Statements until one of `terminators` ({% name %}), which is not consumed.
  Body ParseBody(const std::set<std::string>& terminators) {
    Body body;
    while (true) {
      const Token& token = Peek();
      if (token.type == Type::kEnd) {
        if (!terminators.empty()) {
          // Name the closing tag ({% endfor %}), not an intermediate one ({% else %}).
          std::string closing = *terminators.begin();
          for (const auto& t : terminators) {
            if (t.rfind("end", 0) == 0) closing = t;
          }
          throw Error(absl::StrCat("missing {% ", closing, " %} before the end of the template"), token.line);
        }
        return body;
      }
      if (token.type == Type::kText) {
        body.push_back(std::make_unique<TextStmt>(token.text, token.line));
        ++pos_;
      } else if (token.type == Type::kExprBegin) {
        ++pos_;
        auto out = std::make_unique<OutputStmt>(token.line);
        out->expr = ParseExpression();
        Expect(Type::kExprEnd, "'}}'");
        body.push_back(std::move(out));
      } else if (token.type == Type::kStmtBegin) {
        const Token& keyword = Peek(1);
        if (keyword.type == Type::kName && terminators.count(keyword.text)) return body;
        ++pos_;
        body.push_back(ParseStatement());
      } else {
        Fail("unexpected token");
      }
    }
  }

  void EndTag() { Expect(Type::kStmtEnd, "'%}'"); }

  // Consumes {% name %}.
  void ExpectTag(const std::string& name) {
    Expect(Type::kStmtBegin, "'{%'");
    if (!IsName(name)) Fail(absl::StrCat("expected {% ", name, " %}"));
    ++pos_;
    EndTag();
  }

  StmtPtr ParseStatement() {
    Nested nested(this);
    const int line = Peek().line;
    const std::string keyword = ExpectName();
    if (keyword == "if") return ParseIf(line);
    if (keyword == "for") return ParseFor(line);
    if (keyword == "set") return ParseSet(line);
    if (keyword == "macro") return ParseMacro(line);
    if (keyword == "break" || keyword == "continue") {
      if (loop_depth_ == 0) throw Error(absl::StrCat("{% ", keyword, " %} outside a loop"), line);
      EndTag();
      return std::make_unique<LoopControlStmt>(keyword == "break", line);
    }
    throw Error(absl::StrCat("unsupported construct {% ", keyword, " %} at line ", line), line);
  }

  StmtPtr ParseIf(int line) {
    auto stmt = std::make_unique<IfStmt>(line);
    ExprPtr condition = ParseExpression();
    EndTag();
    while (true) {
      Body body = ParseBody({"elif", "else", "endif"});
      stmt->branches.emplace_back(std::move(condition), std::move(body));
      Expect(Type::kStmtBegin, "'{%'");
      const std::string keyword = ExpectName();
      if (keyword == "elif") {
        condition = ParseExpression();
        EndTag();
        continue;
      }
      EndTag();
      if (keyword == "else") {
        stmt->else_body = ParseBody({"endif"});
        ExpectTag("endif");
      }
      return stmt;
    }
  }

  StmtPtr ParseFor(int line) {
    auto stmt = std::make_unique<ForStmt>(line);
    stmt->targets.push_back(ExpectName());
    while (IsOp(",")) {
      ++pos_;
      stmt->targets.push_back(ExpectName());
    }
    if (!IsName("in")) Fail("expected 'in' in {% for %}");
    ++pos_;
    stmt->iterable = ParseConditionalFree();
    if (IsName("if")) {
      ++pos_;
      stmt->filter = ParseConditionalFree();
    }
    if (IsName("recursive")) throw Error("unsupported construct: recursive for loops", line);
    EndTag();
    ++loop_depth_;
    stmt->body = ParseBody({"else", "endfor"});
    --loop_depth_;
    if (IsName("else", 1)) {
      ExpectTag("else");
      stmt->else_body = ParseBody({"endfor"});
    }
    ExpectTag("endfor");
    return stmt;
  }

  StmtPtr ParseSet(int line) {
    auto stmt = std::make_unique<SetStmt>(line);
    stmt->targets.push_back(ExpectName());
    if (IsOp(".")) {
      ++pos_;
      stmt->attribute = ExpectName();
    }
    while (IsOp(",")) {
      ++pos_;
      stmt->targets.push_back(ExpectName());
    }
    if (IsOp("=")) {
      ++pos_;
      stmt->value = ParseExpression();
      EndTag();
      return stmt;
    }
    EndTag();  // block form: {% set x %}...{% endset %}
    stmt->body = ParseBody({"endset"});
    ExpectTag("endset");
    return stmt;
  }

  StmtPtr ParseMacro(int line) {
    auto stmt = std::make_unique<MacroStmt>(line);
    stmt->name = ExpectName();
    ExpectOp("(");
    while (!IsOp(")")) {
      std::string param = ExpectName();
      ExprPtr fallback;
      if (IsOp("=")) {
        ++pos_;
        fallback = ParseExpression();
      }
      stmt->params.emplace_back(std::move(param), std::move(fallback));
      if (!IsOp(")")) ExpectOp(",");
    }
    ExpectOp(")");
    EndTag();
    const int saved_depth = loop_depth_;
    loop_depth_ = 0;
    stmt->body = ParseBody({"endmacro"});
    loop_depth_ = saved_depth;
    ExpectTag("endmacro");
    return stmt;
  }

  // expression := or_expr ["if" or_expr ["else" expression]]
  ExprPtr ParseExpression() {
    Nested nested(this);
    ExprPtr value = ParseOr();
    if (IsName("if")) {
      auto cond = std::make_unique<Conditional>(Peek().line);
      ++pos_;
      cond->then_value = std::move(value);
      cond->condition = ParseOr();
      if (IsName("else")) {
        ++pos_;
        cond->else_value = ParseExpression();
      }
      return cond;
    }
    return value;
  }
  // For loop heads, where "if" starts the filter clause.
  ExprPtr ParseConditionalFree() { return ParseOr(); }

  ExprPtr MakeBinary(const std::string& op, ExprPtr left, ExprPtr right, int line) {
    auto node = std::make_unique<Binary>(line);
    node->op = op;
    node->left = std::move(left);
    node->right = std::move(right);
    return node;
  }

  ExprPtr ParseOr() {
    ExprPtr left = ParseAnd();
    while (IsName("or")) {
      int line = Next().line;
      left = MakeBinary("or", std::move(left), ParseAnd(), line);
    }
    return left;
  }
  ExprPtr ParseAnd() {
    ExprPtr left = ParseNot();
    while (IsName("and")) {
      int line = Next().line;
      left = MakeBinary("and", std::move(left), ParseNot(), line);
    }
    return left;
  }
  ExprPtr ParseNot() {
    Nested nested(this);
    if (IsName("not")) {
      auto node = std::make_unique<Unary>(Next().line);
      node->op = "not";
      node->operand = ParseNot();
      return node;
    }
    return ParseCompare();
  }
  ExprPtr ParseCompare() {
    ExprPtr left = ParseAdditive();
    while (true) {
      const int line = Peek().line;
      std::string op;
      if (Peek().type == Type::kOperator &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" || Peek().text == ">" ||
           Peek().text == "<=" || Peek().text == ">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        ++pos_;
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        pos_ += 2;
        op = "not in";
      } else {
        return left;
      }
      left = MakeBinary(op, std::move(left), ParseAdditive(), line);
    }
  }
  ExprPtr ParseAdditive() {
    ExprPtr left = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      const Token& op = Next();
      left = MakeBinary(op.text, std::move(left), ParseConcat(), op.line);
    }
    return left;
  }
  ExprPtr ParseConcat() {
    ExprPtr left = ParseMultiplicative();
    while (IsOp("~")) {
      int line = Next().line;
      left = MakeBinary("~", std::move(left), ParseMultiplicative(), line);
    }
    return left;
  }
  ExprPtr ParseMultiplicative() {
    ExprPtr left = ParsePower();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token& op = Next();
      left = MakeBinary(op.text, std::move(left), ParsePower(), op.line);
    }
    return left;
  }
  ExprPtr ParsePower() {
    ExprPtr left = ParseUnary();
    while (IsOp("**")) {
      int line = Next().line;
      left = MakeBinary("**", std::move(left), ParseUnary(), line);
    }
    return left;
  }
  ExprPtr ParseUnary() {
    Nested nested(this);
    if (IsOp("-") || IsOp("+")) {
      auto node = std::make_unique<Unary>(Peek().line);
      node->op = Next().text;
      node->operand = ParseUnary();
      return node;
    }
    return ParseFilters(ParsePostfix(ParsePrimary()));
  }

  // Filters (|) and tests (is) bind to the preceding unary expression.
  ExprPtr ParseFilters(ExprPtr value) {
    while (true) {
      if (IsOp("|")) {
        auto filter = std::make_unique<FilterExpr>(Next().line);
        filter->name = ExpectName();
        if (!IsKnownFilter(filter->name)) {
          throw Error(absl::StrCat("unsupported filter '", filter->name, "' at line ", filter->line), filter->line);
        }
        if (IsOp("(")) filter->args = ParseCallArgs();
        filter->input = std::move(value);
        value = ParsePostfix(std::move(filter));
      } else if (IsName("is")) {
        auto test = std::make_unique<TestExpr>(Next().line);
        if (IsName("not")) {
          ++pos_;
          test->negated = true;
        }
        // Tests named like keywords or operators.
        if (Peek().type == Type::kName || IsOp("==") || IsOp("!=")) {
          test->name = Next().text;
        } else {
          Fail("expected a test name after 'is'");
        }
        if (!IsKnownTest(test->name)) {
          throw Error(absl::StrCat("unsupported test '", test->name, "' at line ", test->line), test->line);
        }
        if (IsOp("(")) {
          test->args = ParseCallArgs();
        } else if (Peek().type == Type::kString || Peek().type == Type::kInteger || Peek().type == Type::kFloat ||
                   (Peek().type == Type::kName && !IsName("and") && !IsName("or") && !IsName("else") &&
                    !IsName("if") && !IsName("is") && !IsName("in") && !IsName("not"))) {
          test->args.positional.push_back(ParsePostfix(ParsePrimary()));  // "is divisibleby 3"
        }
        test->input = std::move(value);
        value = std::move(test);
      } else {
        return value;
      }
    }
  }

  CallArgs ParseCallArgs() {
    CallArgs args;
    ExpectOp("(");
    while (!IsOp(")")) {
      if (Peek().type == Type::kName && IsOp("=", 1)) {
        std::string key = Next().text;
        ++pos_;
        args.keywords.emplace_back(std::move(key), ParseExpression());
      } else {
        if (!args.keywords.empty()) Fail("positional argument after keyword argument");
        args.positional.push_back(ParseExpression());
      }
      if (!IsOp(")")) ExpectOp(",");
    }
    ExpectOp(")");
    return args;
  }

  ExprPtr ParsePostfix(ExprPtr value) {
    while (true) {
      if (IsOp(".")) {
        int line = Next().line;
        if (Peek().type == Type::kInteger) {  // foo.0
          auto sub = std::make_unique<Subscript>(line);
          sub->object = std::move(value);
          sub->index = std::make_unique<Literal>(Value::Int(std::stoll(Next().text)), line);
          value = std::move(sub);
        } else {
          value = std::make_unique<Attribute>(std::move(value), ExpectName(), line);
        }
      } else if (IsOp("[")) {
        auto sub = std::make_unique<Subscript>(Next().line);
        sub->object = std::move(value);
        ExprPtr first;
        if (!IsOp(":")) first = ParseExpression();
        if (IsOp(":")) {
          sub->is_slice = true;
          sub->start = std::move(first);
          ++pos_;
          if (!IsOp(":") && !IsOp("]")) sub->stop = ParseExpression();
          if (IsOp(":")) {
            ++pos_;
            if (!IsOp("]")) sub->step = ParseExpression();
          }
        } else {
          sub->index = std::move(first);
        }
        ExpectOp("]");
        value = std::move(sub);
      } else if (IsOp("(")) {
        auto call = std::make_unique<Call>(Peek().line);
        call->callee = std::move(value);
        call->args = ParseCallArgs();
        value = std::move(call);
      } else {
        return value;
      }
    }
  }

  ExprPtr ParsePrimary() {
    const Token& token = Peek();
    const int line = token.line;
    switch (token.type) {
      case Type::kString: {
        std::string text = Next().text;
        while (Peek().type == Type::kString) text += Next().text;  // adjacent literals concatenate
        return std::make_unique<Literal>(Value::String(std::move(text)), line);
      }
      case Type::kInteger: return std::make_unique<Literal>(Value::Int(std::stoll(Next().text)), line);
      case Type::kFloat: return std::make_unique<Literal>(Value::Float(std::stod(Next().text)), line);
      case Type::kName: {
        const std::string name = Next().text;
        if (name == "true" || name == "True") return std::make_unique<Literal>(Value::Bool(true), line);
        if (name == "false" || name == "False") return std::make_unique<Literal>(Value::Bool(false), line);
        if (name == "none" || name == "None") return std::make_unique<Literal>(Value::None(), line);
        return std::make_unique<Name>(name, line);
      }
      case Type::kOperator: {
        if (token.text == "(") {
          ++pos_;
          ExprPtr inner = ParseExpression();
          if (IsOp(",")) {  // a tuple: evaluated as a list
            auto list = std::make_unique<ListExpr>(line);
            list->items.push_back(std::move(inner));
            while (IsOp(",")) {
              ++pos_;
              if (IsOp(")")) break;
              list->items.push_back(ParseExpression());
            }
            inner = std::move(list);
          }
          ExpectOp(")");
          return inner;
        }
        if (token.text == "[") {
          ++pos_;
          auto list = std::make_unique<ListExpr>(line);
          while (!IsOp("]")) {
            list->items.push_back(ParseExpression());
            if (!IsOp("]")) ExpectOp(",");
          }
          ExpectOp("]");
          return list;
        }
        if (token.text == "{") {
          ++pos_;
          auto dict = std::make_unique<DictExpr>(line);
          while (!IsOp("}")) {
            ExprPtr key = ParseExpression();
            ExpectOp(":");
            dict->items.emplace_back(std::move(key), ParseExpression());
            if (!IsOp("}")) ExpectOp(",");
          }
          ExpectOp("}");
          return dict;
        }
        break;
      }
      default: break;
    }
    Fail(absl::StrCat("unexpected '", token.text.empty() ? "end of tag" : token.text, "' in expression"));
  }

  const std::vector<Token>& tokens_;
  size_t pos_ = 0;
  int depth_ = 0;  // current nesting, see Nested
  int loop_depth_ = 0;
};

}  // namespace

Body Parse(const std::vector<Token>& tokens) { return Parser(tokens).ParseTemplate(); }

}  // namespace gantry::text::jinja
