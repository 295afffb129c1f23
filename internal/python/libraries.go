package python

import "strings"

// Library is a Python library the sandbox offers, installed from Debian by
// scripts/deps.sh. The list drives the doctor's checks, the zygote's
// preloading, the benchmark of first imports and what the model's tool
// description and GET /v1/runtimes say is there.
type Library struct {
	// Name is the name users know it by (its distribution name).
	Name string
	// Import is the module to import: the one a user's first line imports.
	Import string
	// Debian is the package that installs it.
	Debian string
	// Preload is set when the zygote imports it before any request, so
	// that no child pays for the import: for the libraries whose first
	// import in a warm child took over 100 ms (docs/performance.md has
	// the figures; codeexec bench measures them).
	Preload bool
	// Probe is one typical call after the import, for codeexec bench.
	Probe string
}

// Libraries are the libraries of the sandbox, the seed's five first.
var Libraries = []Library{
	{Name: "numpy", Import: "numpy", Debian: "python3-numpy", Preload: true,
		Probe: "numpy.arange(1000).reshape(10, 100).sum(axis=0).mean()"},
	{Name: "pandas", Import: "pandas", Debian: "python3-pandas", Preload: true,
		Probe: "pandas.DataFrame({'a': [1, 2, 3]}).describe()"},
	{Name: "matplotlib", Import: "matplotlib.pyplot", Debian: "python3-matplotlib", Preload: true,
		Probe: "matplotlib.pyplot.plot([1, 2, 3]); matplotlib.pyplot.close('all')"},
	{Name: "scipy", Import: "scipy.stats", Debian: "python3-scipy", Preload: true,
		Probe: "scipy.stats.ttest_ind([1, 2, 3], [2, 3, 5])"},
	{Name: "sympy", Import: "sympy", Debian: "python3-sympy", Preload: true,
		Probe: "sympy.solve(sympy.Symbol('x') ** 2 - 4)"},
	{Name: "requests", Import: "requests", Debian: "python3-requests", Preload: true,
		Probe: "requests.Request('GET', 'http://localhost/').prepare()"},
	{Name: "Pillow", Import: "PIL.Image", Debian: "python3-pil",
		Probe: "PIL.Image.new('RGB', (64, 64)).resize((32, 32))"},
	{Name: "seaborn", Import: "seaborn", Debian: "python3-seaborn", Preload: true,
		Probe: "seaborn.histplot([1, 2, 2, 3]); matplotlib.pyplot.close('all')"},
	{Name: "scikit-learn", Import: "sklearn.linear_model", Debian: "python3-sklearn", Preload: true,
		Probe: "sklearn.linear_model.LinearRegression().fit([[0], [1], [2]], [0, 1, 2]).coef_"},
	{Name: "statsmodels", Import: "statsmodels.api", Debian: "python3-statsmodels", Preload: true,
		Probe: "statsmodels.api.OLS([1.0, 2.0, 3.1], statsmodels.api.add_constant([1.0, 2.0, 3.0])).fit().params"},
	{Name: "openpyxl", Import: "openpyxl", Debian: "python3-openpyxl", Preload: true,
		Probe: "openpyxl.Workbook().active.append([1, 2, 3])"},
	{Name: "xlrd", Import: "xlrd", Debian: "python3-xlrd",
		Probe: "xlrd.colname(27)"},
	{Name: "XlsxWriter", Import: "xlsxwriter", Debian: "python3-xlsxwriter",
		Probe: "xlsxwriter.Workbook('/tmp/bench.xlsx').close()"},
	{Name: "networkx", Import: "networkx", Debian: "python3-networkx", Preload: true,
		Probe: "networkx.shortest_path(networkx.path_graph(10), 0, 9)"},
	{Name: "python-docx", Import: "docx", Debian: "python3-docx", Preload: true,
		Probe: "docx.Document().add_paragraph('x')"},
	{Name: "pypdf", Import: "pypdf", Debian: "python3-pypdf", Preload: true,
		Probe: "pypdf.PdfWriter().add_blank_page(72, 72)"},
	{Name: "beautifulsoup4", Import: "bs4", Debian: "python3-bs4", Preload: true,
		Probe: "bs4.BeautifulSoup('<p>a<b>b</b></p>', 'html.parser').get_text()"},
	{Name: "lxml", Import: "lxml.etree", Debian: "python3-lxml",
		Probe: "lxml.etree.fromstring('<a><b>1</b></a>').findtext('b')"},
	{Name: "tabulate", Import: "tabulate", Debian: "python3-tabulate",
		Probe: "tabulate.tabulate([[1, 2]], headers=['a', 'b'])"},
	{Name: "reportlab", Import: "reportlab.pdfgen.canvas", Debian: "python3-reportlab", Preload: true,
		Probe: "reportlab.pdfgen.canvas.Canvas('/tmp/bench.pdf').save()"},
	{Name: "plotly", Import: "plotly.graph_objects", Debian: "python3-plotly",
		Probe: "plotly.graph_objects.Figure(data=[plotly.graph_objects.Bar(y=[1, 2])]).to_json()"},
}

// Preloads are the modules the zygote imports, in order (see
// Library.Preload).
func Preloads() []string {
	var out []string
	for _, l := range Libraries {
		if l.Preload {
			out = append(out, l.Import)
		}
	}
	return out
}

// LibraryNames lists Libraries by the names users know them by, for the
// descriptions models read.
func LibraryNames() string {
	names := make([]string, len(Libraries))
	for i, l := range Libraries {
		names[i] = l.Name
	}
	return strings.Join(names, ", ")
}
