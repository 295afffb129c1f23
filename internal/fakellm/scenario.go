package fakellm

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// Tool names the fake knows.
const (
	CodeTool    = "code_execution"
	SearchTool  = "web_search"
	WeatherTool = "get_weather" // a client function tool
)

// Scenario names, reported in Reply.Scenario.
const (
	ScenarioLoop       = "loop"
	ScenarioWeather    = "weather"
	ScenarioSearch     = "search"
	ScenarioAttached   = "attached"
	ScenarioSetVar     = "set-variable"
	ScenarioUseVar     = "use-variable"
	ScenarioInterest   = "compound-interest"
	ScenarioFib        = "fibonacci"
	ScenarioChart      = "bar-chart"
	ScenarioSavedChart = "saved-chart"
	ScenarioCSV        = "csv"
	ScenarioPlain      = "plain"
)

// The exact code of the scenarios with fixed code.
const (
	CompoundInterestCode = "amount = 10000 * (1.05 ** 10)\nprint(f\"{amount:.2f}\")"

	FibonacciCode = "def fibonacci(n):\n" +
		"    fibs = [0, 1]\n" +
		"    for i in range(2, n):\n" +
		"        fibs.append(fibs[-1] + fibs[-2])\n" +
		"    return fibs[:n]\n" +
		"\n" +
		"print(fibonacci(20))"

	BarChartCode = "import matplotlib.pyplot as plt\n" +
		"\n" +
		"languages = [\"Python\", \"JavaScript\", \"Java\", \"C++\", \"C#\"]\n" +
		"popularity = [29.9, 19.1, 16.2, 6.9, 6.6]\n" +
		"plt.figure(figsize=(8, 5))\n" +
		"plt.bar(languages, popularity, color=\"steelblue\")\n" +
		"plt.title(\"Top 5 programming languages by popularity\")\n" +
		"plt.ylabel(\"Popularity (%)\")\n" +
		"plt.show()"

	// SavedChartCode is BarChartCode that also saves the chart as
	// /mnt/data/chart.png.
	SavedChartCode = "import matplotlib.pyplot as plt\n" +
		"\n" +
		"plt.bar([\"a\", \"b\"], [1, 2])\n" +
		"plt.savefig(\"/mnt/data/chart.png\")\n" +
		"plt.show()"
	LoopCode = "print('again')"

	WeatherCode = "print(2+2)"

	// ListFilesCode is sent for "attached" when no /mnt/data path is named.
	ListFilesCode = "import os\nprint(sorted(os.listdir(\"/mnt/data\")))"

	// DefaultCSV is analysed when a "csv"/"trend" message holds no CSV.
	DefaultCSV = "month,sales\n1,100\n2,120\n3,150"
)

// Fixed answers.
const (
	PlainAnswer      = "I don't need tools for that."
	OutOfTurns       = "I ran out of turns."
	NoCodeTool       = "I cannot run code without the code_execution tool."
	ChartAnswer      = "Here is the chart."
	SavedChartAnswer = "The chart is saved as chart.png."
	NoChartAnswer    = "No chart was produced."
	FailurePrefix    = "The code failed: "
	WeatherCity      = "Paris"
	WeatherArgs      = `{"city":"Paris"}`
	ToolOutputLead   = "The tool output was: "
)

// CSVCode is the code sent for the csv/trend scenario: it analyses data
// (the CSV text) and prints e.g. "sales trend: increasing, mean change 25.0".
func CSVCode(data string) string {
	return "import io\n" +
		"import pandas as pd\n" +
		"\n" +
		"data = " + pyString(data) + "\n" +
		"df = pd.read_csv(io.StringIO(data))\n" +
		"col = df.select_dtypes(\"number\").columns[-1]\n" +
		"change = df[col].diff().dropna()\n" +
		"if (change > 0).all():\n" +
		"    trend = \"increasing\"\n" +
		"elif (change < 0).all():\n" +
		"    trend = \"decreasing\"\n" +
		"else:\n" +
		"    trend = \"mixed\"\n" +
		"print(f\"{col} trend: {trend}, mean change {change.mean():.1f}\")"
}

// AttachedFileCode is the code sent for the attached-file scenario: it
// reads path as CSV and prints e.g. "rows: 3, sales sum: 370" (the sum of
// the last numeric column).
func AttachedFileCode(path string) string {
	return "import pandas as pd\n" +
		"\n" +
		"df = pd.read_csv(" + pyString(path) + ")\n" +
		"col = df.select_dtypes(\"number\").columns[-1]\n" +
		"print(f\"rows: {len(df)}, {col} sum: {df[col].sum()}\")"
}

// SetVariableCode is the code sent for "set NAME to VALUE".
func SetVariableCode(name, value string) string {
	return name + " = " + value + "\nprint('stored')"
}

// UseVariableCode is the code sent for "what is NAME plus N".
func UseVariableCode(name string, n int) string {
	return fmt.Sprintf("print(%s + %d)", name, n)
}

// SearchCode is the code sent after a web_search result: it counts the
// non-empty lines of results and prints "N lines of search results"; with
// plot it also plots the numbers found in results and prints
// "N lines of search results, M values plotted".
func SearchCode(results string, plot bool) string {
	if !plot {
		return "results = " + pyString(results) + "\n" +
			"lines = [line for line in results.splitlines() if line.strip()]\n" +
			"print(f\"{len(lines)} lines of search results\")"
	}
	return "import re\n" +
		"import matplotlib.pyplot as plt\n" +
		"\n" +
		"results = " + pyString(results) + "\n" +
		"lines = [line for line in results.splitlines() if line.strip()]\n" +
		"values = [float(v) for v in re.findall(r\"\\d+(?:\\.\\d+)?\", results)]\n" +
		"plt.plot(values or [0])\n" +
		"plt.title(\"Values found in the search results\")\n" +
		"plt.show()\n" +
		"print(f\"{len(lines)} lines of search results, {len(values)} values plotted\")"
}

// pyString is s as a Python string literal (a JSON string is one).
func pyString(s string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// CodeArgs is the JSON arguments of a code_execution call of code.
func CodeArgs(code string) string { return jsonArgs(map[string]string{"code": code}) }

// SearchArgs is the JSON arguments of a web_search call for query.
func SearchArgs(query string) string { return jsonArgs(map[string]string{"query": query}) }

func jsonArgs(v map[string]string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return strings.TrimSuffix(b.String(), "\n")
}

// Reply is what the fake model answers: either Content or ToolCalls (whose
// IDs the Handler fills in).
type Reply struct {
	Scenario  string
	Content   string
	ToolCalls []ToolCall
}

// FinishReason is "tool_calls" or "stop".
func (r Reply) FinishReason() string {
	if len(r.ToolCalls) > 0 {
		return "tool_calls"
	}
	return "stop"
}

// toolResult is a tool message after the last user message, with the call
// it answers.
type toolResult struct {
	name, args, content string
}

type convo struct {
	req     *Request
	text    string // the last user message's text
	lower   string
	results []toolResult
}

func newConvo(r *Request) *convo {
	c := &convo{req: r}
	last := -1
	for i, m := range r.Messages {
		if m.Role == "user" {
			last = i
		}
	}
	if last >= 0 {
		c.text = r.Messages[last].Text()
	}
	c.lower = strings.ToLower(c.text)
	calls := map[string]ToolCall{}
	for _, m := range r.Messages[last+1:] {
		switch m.Role {
		case "assistant":
			for _, tc := range m.ToolCalls {
				calls[tc.ID] = tc
			}
		case "tool":
			tc, ok := calls[m.ToolCallID]
			if !ok {
				continue // not an answer to a call we made: ignore it
			}
			c.results = append(c.results, toolResult{name: tc.Function.Name, args: tc.Function.Arguments, content: m.Text()})
		}
	}
	return c
}

// last is the last result of the tool name.
func (c *convo) last(name string) (toolResult, bool) {
	for i := len(c.results) - 1; i >= 0; i-- {
		if c.results[i].name == name {
			return c.results[i], true
		}
	}
	return toolResult{}, false
}

func answer(scenario, content string) Reply { return Reply{Scenario: scenario, Content: content} }

func call(scenario string, calls ...ToolCall) Reply {
	return Reply{Scenario: scenario, ToolCalls: calls}
}

func fn(name, args string) ToolCall {
	return ToolCall{Type: "function", Function: FunctionCall{Name: name, Arguments: args}}
}

var (
	setRe    = regexp.MustCompile(`(?i)\bset\s+([A-Za-z_]\w*)\s+(?:to|=)\s+(-?\d+(?:\.\d+)?)`)
	plusRe   = regexp.MustCompile(`(?i)\bwhat\s+is\s+([A-Za-z_]\w*)\s+plus\s+(one|two|three|\d+)\b`)
	pathRe   = regexp.MustCompile("/mnt/data/[^\\s\"'`<>,;()\\[\\]{}]+")
	queryRe  = regexp.MustCompile(`(?i)\bsearch\s+(?:the\s+web\s+)?for\s+(.+?)(?:\s+and\s+|[.?!]*\s*$)`)
	errorRe  = regexp.MustCompile(`^[A-Za-z_][\w.]*(Error|Exception)\b`)
	numWords = map[string]int{"one": 1, "two": 2, "three": 3}
)

// Decide is the fake model's reply to r (without tool call ids).
func Decide(r *Request) Reply {
	c := newConvo(r)
	switch {
	case strings.Contains(c.lower, "loop forever"):
		if r.Offers(CodeTool) {
			return call(ScenarioLoop, fn(CodeTool, CodeArgs(LoopCode)))
		}
		return answer(ScenarioLoop, OutOfTurns)
	case strings.Contains(c.lower, "weather") && (r.Offers(WeatherTool) || c.has(WeatherTool)):
		return c.weather()
	case strings.Contains(c.lower, "search") && (r.Offers(SearchTool) || c.has(SearchTool)):
		return c.search()
	case strings.Contains(c.lower, "attached") || strings.Contains(c.lower, "/mnt/data/"):
		path := c.filePath()
		code := ListFilesCode
		if path != "" {
			code = AttachedFileCode(path)
		}
		return c.single(ScenarioAttached, code, func(out string) string {
			if path == "" {
				return "The files in /mnt/data are: " + out
			}
			return "Analysis of " + path + ": " + out
		})
	case setRe.MatchString(c.text):
		m := setRe.FindStringSubmatch(c.text)
		return c.single(ScenarioSetVar, SetVariableCode(m[1], m[2]), func(out string) string {
			return fmt.Sprintf("I set %s = %s (output: %s).", m[1], m[2], out)
		})
	case plusRe.MatchString(c.text):
		m := plusRe.FindStringSubmatch(c.text)
		n, ok := numWords[strings.ToLower(m[2])]
		if !ok {
			fmt.Sscan(m[2], &n)
		}
		return c.single(ScenarioUseVar, UseVariableCode(m[1], n), func(out string) string {
			return fmt.Sprintf("%s plus %s is %s.", m[1], m[2], out)
		})
	case strings.Contains(c.lower, "compound interest"):
		return c.single(ScenarioInterest, CompoundInterestCode, func(out string) string {
			return "The amount after 10 years is $" + out + "."
		})
	case strings.Contains(c.lower, "fibonacci"):
		return c.single(ScenarioFib, FibonacciCode, func(out string) string {
			return "The first 20 Fibonacci numbers are: " + out
		})
	case strings.Contains(c.lower, "save") && strings.Contains(c.lower, "chart"):
		return c.single(ScenarioSavedChart, SavedChartCode, func(out string) string {
			return SavedChartAnswer
		})
	case strings.Contains(c.lower, "bar chart"):
		return c.single(ScenarioChart, BarChartCode, func(out string) string {
			if strings.Contains(strings.ToLower(out), "image") {
				return ChartAnswer
			}
			return NoChartAnswer
		})
	case strings.Contains(c.lower, "csv") || strings.Contains(c.lower, "trend"):
		return c.single(ScenarioCSV, CSVCode(extractCSV(c.text)), func(out string) string {
			return "The analysis shows: " + out
		})
	}
	if len(c.results) > 0 {
		return answer(ScenarioPlain, ToolOutputLead+strings.TrimSpace(c.results[len(c.results)-1].content))
	}
	return answer(ScenarioPlain, PlainAnswer)
}

func (c *convo) has(name string) bool {
	_, ok := c.last(name)
	return ok
}

// single is a scenario of one code_execution call and an answer built from
// its output by build.
func (c *convo) single(scenario, code string, build func(out string) string) Reply {
	if res, ok := c.last(CodeTool); ok {
		if msg, failed := failure(res.content); failed {
			return answer(scenario, FailurePrefix+msg)
		}
		return answer(scenario, build(strings.TrimSpace(res.content)))
	}
	if c.req.Offers(CodeTool) {
		return call(scenario, fn(CodeTool, CodeArgs(code)))
	}
	return answer(scenario, NoCodeTool)
}

// failure reports whether out is a failed run, and the line to quote: the
// first line that starts with an exception name ("ZeroDivisionError: ..."),
// else the first non-empty line.
func failure(out string) (string, bool) {
	if !strings.Contains(out, "Error") && !strings.Contains(out, "Traceback") {
		return "", false
	}
	first := ""
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if first == "" {
			first = line
		}
		if errorRe.MatchString(line) {
			return line, true
		}
	}
	return first, true
}

func (c *convo) weather() Reply {
	w, okW := c.last(WeatherTool)
	code, okC := c.last(CodeTool)
	switch {
	case okW && okC:
		return answer(ScenarioWeather, fmt.Sprintf("Paris is %s and 2+2 is %s", strings.TrimSpace(w.content), strings.TrimSpace(code.content)))
	case okW:
		return answer(ScenarioWeather, fmt.Sprintf("Paris is %s, but I have no result for 2+2", strings.TrimSpace(w.content)))
	case okC:
		return answer(ScenarioWeather, fmt.Sprintf("I have no weather for Paris, but 2+2 is %s", strings.TrimSpace(code.content)))
	}
	var calls []ToolCall
	if c.req.Offers(CodeTool) {
		calls = append(calls, fn(CodeTool, CodeArgs(WeatherCode)))
	}
	if c.req.Offers(WeatherTool) {
		calls = append(calls, fn(WeatherTool, WeatherArgs))
	}
	return call(ScenarioWeather, calls...)
}

func (c *convo) search() Reply {
	s, okS := c.last(SearchTool)
	if !okS {
		if c.req.Offers(SearchTool) {
			return call(ScenarioSearch, fn(SearchTool, SearchArgs(SearchQuery(c.text))))
		}
		return answer(ScenarioSearch, PlainAnswer)
	}
	found := firstLine(s.content)
	code, okC := c.last(CodeTool)
	if !okC {
		if c.req.Offers(CodeTool) {
			plot := strings.Contains(c.lower, "plot") || strings.Contains(c.lower, "chart")
			return call(ScenarioSearch, fn(CodeTool, CodeArgs(SearchCode(s.content, plot))))
		}
		return answer(ScenarioSearch, "Search found: "+found+".")
	}
	if msg, failed := failure(code.content); failed {
		return answer(ScenarioSearch, FailurePrefix+msg)
	}
	return answer(ScenarioSearch, "Search found: "+found+". Code output: "+strings.TrimSpace(code.content))
}

// SearchQuery is the web_search query the fake sends for a user message:
// the words after "search for" or "search the web for" up to " and " or the end
// ("Search for Bitcoin price history and plot it" → "Bitcoin price
// history"), else the whole message.
func SearchQuery(text string) string {
	if m := queryRe.FindStringSubmatch(text); m != nil && strings.TrimSpace(m[1]) != "" {
		return strings.TrimSpace(m[1])
	}
	return strings.TrimSpace(text)
}

func firstLine(s string) string {
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			return line
		}
	}
	return ""
}

// filePath is the first /mnt/data/... path named in the last user message,
// else in the other messages (latest first), else in the tool
// descriptions.
func (c *convo) filePath() string {
	if p := findPath(c.text); p != "" {
		return p
	}
	for i := len(c.req.Messages) - 1; i >= 0; i-- {
		if p := findPath(c.req.Messages[i].Text()); p != "" {
			return p
		}
	}
	for _, t := range c.req.Tools {
		if t.Function != nil {
			if p := findPath(t.Function.Description); p != "" {
				return p
			}
		}
	}
	return ""
}

func findPath(s string) string {
	return strings.TrimRight(pathRe.FindString(s), ".:!?")
}

// extractCSV is the CSV in text: from the first line that looks like a
// header (comma-separated names; text up to a colon is dropped) through
// the following lines that hold a comma. Without one it is DefaultCSV.
func extractCSV(text string) string {
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		if j := strings.LastIndex(line, ":"); j >= 0 {
			line = line[j+1:]
		}
		if !isHeader(line) {
			continue
		}
		block := []string{strings.TrimSpace(line)}
		for _, next := range lines[i+1:] {
			next = strings.TrimSpace(next)
			if !strings.Contains(next, ",") {
				break
			}
			block = append(block, next)
		}
		if len(block) > 1 {
			return strings.Join(block, "\n")
		}
	}
	return DefaultCSV
}

var headerField = regexp.MustCompile(`^[A-Za-z_][\w .%()-]*$`)

func isHeader(line string) bool {
	fields := strings.Split(strings.TrimSpace(line), ",")
	if len(fields) < 2 {
		return false
	}
	for _, f := range fields {
		if !headerField.MatchString(strings.TrimSpace(f)) {
			return false
		}
	}
	return true
}
