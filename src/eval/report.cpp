#include "eval/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>

namespace kvp {

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::vector<std::string> presses_in_order(const std::vector<TaskScore>& scores) {
  std::vector<std::string> out;
  for (const auto& s : scores) {
    if (std::find(out.begin(), out.end(), s.press) == out.end()) out.push_back(s.press);
  }
  return out;
}

std::vector<double> press_ratios(const std::vector<TaskScore>& scores) {
  std::set<double> r;
  for (const auto& s : scores) {
    if (s.press != "baseline") r.insert(s.ratio);
  }
  return {r.begin(), r.end()};
}

}  // namespace

std::string markdown_cell(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '|')
      out += "\\|";
    else if (c == '\n' || c == '\r')
      out += ' ';
    else
      out += c;
  }
  return out;
}

std::string format_ratio(double ratio) {
  std::string s = fmt("%.4f", ratio);
  while (s.size() > 3 && s.back() == '0') s.pop_back();
  return s;
}

std::vector<CellAverage> cell_averages(const std::vector<TaskScore>& scores) {
  std::vector<CellAverage> out;
  for (const auto& s : scores) {
    auto it = std::find_if(out.begin(), out.end(), [&](const CellAverage& c) {
      return c.press == s.press && c.ratio == s.ratio;
    });
    if (it == out.end()) {
      out.push_back({s.press, s.ratio, 0, 0});
      it = out.end() - 1;
    }
    it->score += s.score;
    ++it->tasks;
  }
  for (auto& c : out) c.score /= std::max(c.tasks, 1);
  return out;
}

std::string results_csv(const std::vector<TaskScore>& scores) {
  std::string out = "press,ratio,task,score,n\n";
  for (const auto& s : scores) {
    out += csv_field(s.press) + "," + format_ratio(s.ratio) + "," + csv_field(s.task) + "," +
           fmt("%.2f", s.score) + "," + std::to_string(s.n) + "\n";
  }
  return out;
}

std::string results_markdown(const std::vector<TaskScore>& scores) {
  const auto avg = cell_averages(scores);
  const auto ratios = press_ratios(scores);
  auto find = [&](const std::string& p, double r) -> const CellAverage* {
    for (const auto& c : avg) {
      if (c.press == p && c.ratio == r) return &c;
    }
    return nullptr;
  };
  std::ostringstream md;
  md << "| press | none |";
  for (double r : ratios) md << " " << format_ratio(r) << " |";
  md << "\n|---|---:|";
  for (size_t i = 0; i < ratios.size(); ++i) md << "---:|";
  md << "\n";
  for (const auto& p : presses_in_order(scores)) {
    md << "| " << markdown_cell(p) << " |";
    const CellAverage* base = p == "baseline" ? find(p, 0) : nullptr;
    md << " " << (base ? fmt("%.1f", base->score) : "") << " |";
    for (double r : ratios) {
      const CellAverage* c = p == "baseline" ? nullptr : find(p, r);
      md << " " << (c ? fmt("%.1f", c->score) : "") << " |";
    }
    md << "\n";
  }
  // Per task.
  std::vector<std::string> tasks;
  for (const auto& s : scores) {
    if (std::find(tasks.begin(), tasks.end(), s.task) == tasks.end()) tasks.push_back(s.task);
  }
  md << "\n| press | ratio |";
  for (const auto& t : tasks) md << " " << markdown_cell(t) << " |";
  md << " average |\n|---|---:|";
  for (size_t i = 0; i <= tasks.size(); ++i) md << "---:|";
  md << "\n";
  for (const auto& c : avg) {
    md << "| " << markdown_cell(c.press) << " | "
       << (c.press == "baseline" ? "-" : format_ratio(c.ratio)) << " |";
    for (const auto& t : tasks) {
      auto it = std::find_if(scores.begin(), scores.end(), [&](const TaskScore& s) {
        return s.press == c.press && s.ratio == c.ratio && s.task == t;
      });
      md << " " << (it == scores.end() ? "" : fmt("%.0f", it->score)) << " |";
    }
    md << " " << fmt("%.1f", c.score) << " |\n";
  }
  return md.str();
}

std::string results_svg(const std::vector<TaskScore>& scores, const std::string& title,
                        const std::string& subtitle) {
  const auto avg = cell_averages(scores);
  const auto ratios = press_ratios(scores);
  const CellAverage* base = nullptr;
  for (const auto& c : avg) {
    if (c.press == "baseline") base = &c;
  }
  std::vector<std::string> presses;
  for (const auto& p : presses_in_order(scores)) {
    if (p != "baseline") presses.push_back(p);
  }
  // Layout: plot area on the left, legend on the right.
  const double W = 860, H = 520, left = 72, top = 78, plot_w = 560, plot_h = 360;
  const double x_max =
      ratios.empty() ? 1.0 : std::min(1.0, std::ceil((ratios.back() + 0.05) * 10.0) / 10.0);
  double y_max = 0;
  for (const auto& c : avg) y_max = std::max(y_max, c.score);
  y_max = std::max(20.0, std::min(100.0, std::ceil((y_max + 5) / 20.0) * 20.0));
  auto X = [&](double r) { return left + r / x_max * plot_w; };
  auto Y = [&](double s) { return top + plot_h - s / y_max * plot_h; };
  static const char* palette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                  "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" viewBox=\"0 0 " << W << " " << H << "\" font-family=\"Helvetica, Arial, sans-serif\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
  o << "<text x=\"" << left << "\" y=\"34\" font-size=\"20\" font-weight=\"bold\" fill=\"#222\">"
    << xml_escape(title) << "</text>\n";
  o << "<text x=\"" << left << "\" y=\"56\" font-size=\"13\" fill=\"#666\">" << xml_escape(subtitle)
    << "</text>\n";
  o << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\""
    << plot_h << "\" fill=\"#fafafa\" stroke=\"none\"/>\n";
  // Grid and ticks.
  for (double s = 0; s <= y_max + 1e-9; s += 20) {
    o << "<line x1=\"" << left << "\" x2=\"" << left + plot_w << "\" y1=\"" << Y(s) << "\" y2=\""
      << Y(s) << "\" stroke=\"#e3e3e3\" stroke-width=\"1\"/>\n";
    o << "<text x=\"" << left - 10 << "\" y=\"" << Y(s) + 4
      << "\" font-size=\"12\" fill=\"#555\" text-anchor=\"end\">" << fmt("%.0f", s) << "</text>\n";
  }
  const double x_step = x_max > 0.5 ? 0.1 : 0.05;
  for (double r = 0; r <= x_max + 1e-9; r += x_step) {
    o << "<line x1=\"" << X(r) << "\" x2=\"" << X(r) << "\" y1=\"" << top << "\" y2=\""
      << top + plot_h << "\" stroke=\"#efefef\" stroke-width=\"1\"/>\n";
    o << "<text x=\"" << X(r) << "\" y=\"" << top + plot_h + 20
      << "\" font-size=\"12\" fill=\"#555\" text-anchor=\"middle\">"
      << format_ratio(std::round(r * 100) / 100) << "</text>\n";
  }
  o << "<line x1=\"" << left << "\" x2=\"" << left + plot_w << "\" y1=\"" << top + plot_h
    << "\" y2=\"" << top + plot_h << "\" stroke=\"#333\" stroke-width=\"1.2\"/>\n";
  o << "<line x1=\"" << left << "\" x2=\"" << left << "\" y1=\"" << top << "\" y2=\""
    << top + plot_h << "\" stroke=\"#333\" stroke-width=\"1.2\"/>\n";
  o << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << top + plot_h + 46
    << "\" font-size=\"14\" fill=\"#333\" text-anchor=\"middle\">compression ratio (fraction of "
       "the context's KV cache removed)</text>\n";
  o << "<text transform=\"translate(" << left - 46 << "," << top + plot_h / 2
    << ") rotate(-90)\" font-size=\"14\" fill=\"#333\" text-anchor=\"middle\">average score "
       "(%)</text>\n";
  // Baseline.
  if (base) {
    o << "<line x1=\"" << left << "\" x2=\"" << left + plot_w << "\" y1=\"" << Y(base->score)
      << "\" y2=\"" << Y(base->score)
      << "\" stroke=\"#444\" stroke-width=\"1.5\" stroke-dasharray=\"6,4\"/>\n";
  }
  // One line per press.
  for (size_t i = 0; i < presses.size(); ++i) {
    const char* color = palette[i % 10];
    std::vector<std::pair<double, double>> pts;
    if (base) pts.emplace_back(0.0, base->score);
    for (const auto& c : avg) {
      if (c.press == presses[i]) pts.emplace_back(c.ratio, c.score);
    }
    std::sort(pts.begin(), pts.end());
    o << "<polyline fill=\"none\" stroke=\"" << color
      << "\" stroke-width=\"2.4\" stroke-linejoin=\"round\" points=\"";
    for (const auto& [r, s] : pts) o << fmt("%.1f", X(r)) << "," << fmt("%.1f", Y(s)) << " ";
    o << "\"/>\n";
    for (const auto& [r, s] : pts) {
      if (base && r == 0.0) continue;
      o << "<circle cx=\"" << fmt("%.1f", X(r)) << "\" cy=\"" << fmt("%.1f", Y(s))
        << "\" r=\"4\" fill=\"" << color << "\" stroke=\"#fff\" stroke-width=\"1.2\"><title>"
        << xml_escape(presses[i]) << " @ " << format_ratio(r) << ": " << fmt("%.1f", s)
        << "</title></circle>\n";
    }
  }
  if (base) {
    o << "<circle cx=\"" << X(0) << "\" cy=\"" << fmt("%.1f", Y(base->score))
      << "\" r=\"5\" fill=\"#444\"/>\n";
  }
  // Legend.
  const double lx = left + plot_w + 28;
  double ly = top + 8;
  o << "<text x=\"" << lx << "\" y=\"" << ly
    << "\" font-size=\"13\" font-weight=\"bold\" fill=\"#333\">press</text>\n";
  ly += 22;
  if (base) {
    o << "<line x1=\"" << lx << "\" x2=\"" << lx + 26 << "\" y1=\"" << ly - 4 << "\" y2=\""
      << ly - 4 << "\" stroke=\"#444\" stroke-width=\"1.5\" stroke-dasharray=\"6,4\"/>\n";
    o << "<text x=\"" << lx + 34 << "\" y=\"" << ly
      << "\" font-size=\"13\" fill=\"#333\">no compression (" << fmt("%.1f", base->score)
      << ")</text>\n";
    ly += 22;
  }
  for (size_t i = 0; i < presses.size(); ++i) {
    const char* color = palette[i % 10];
    o << "<line x1=\"" << lx << "\" x2=\"" << lx + 26 << "\" y1=\"" << ly - 4 << "\" y2=\""
      << ly - 4 << "\" stroke=\"" << color << "\" stroke-width=\"2.4\"/>\n";
    o << "<circle cx=\"" << lx + 13 << "\" cy=\"" << ly - 4 << "\" r=\"4\" fill=\"" << color
      << "\" stroke=\"#fff\" stroke-width=\"1.2\"/>\n";
    o << "<text x=\"" << lx + 34 << "\" y=\"" << ly << "\" font-size=\"13\" fill=\"#333\">"
      << xml_escape(presses[i]) << "</text>\n";
    ly += 22;
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace kvp
