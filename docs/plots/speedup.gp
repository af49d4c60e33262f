# Speedup over standard collaborative decoding against the cheap model's acceptance rate,
# from the CSV of cospec-cost-sweep (docs/benchmarks.md, "Cost-model sweep").
# Lines: the closed-form prediction (docs/theory.md) at each run's measured acceptance rates;
# marks: the speedup measured with the cost clock. Columns of panels: the cost of a pass of
# the cheap model relative to the others'; rows: two and three models.
#
# Run from the repository root (gnuplot 5.4 with the pngcairo terminal, e.g. gnuplot-nox):
#   ./build/release/examples/cospec-cost-sweep --csv docs/plots/cost_sweep.csv
#   gnuplot docs/plots/speedup.gp
# Other paths: gnuplot -e "csv='sweep.csv'; png='speedup.png'" docs/plots/speedup.gp

if (!exists("csv")) csv = 'docs/plots/cost_sweep.csv'
if (!exists("png")) png = 'docs/plots/speedup.png'

# The CSV columns used, in the order cospec-cost-sweep writes them.
setting = 1; method = 4; gamma = 5; cost = 8; acceptance = 10; speedup = 17; predicted = 18

array families[5] = ["WE 0.5/0.5", "WE 0.1/0.9", "CD mu 0.1", "WE 3 x 1/3", "WE 0.1/0.45/0.45"]
array first_family[2] = [1, 4]  # of the two-model and the three-model row
array last_family[2] = [3, 5]
array filled[5] = [7, 9, 5, 7, 9]  # marks per family: filled for CoS, open for SD
array open[5] = [6, 8, 4, 6, 8]
array costs[3] = ["1:1", "1:8", "1:100"]
array methods[2] = ["CoS", "SD"]
array shown_gammas[2] = [1, 5]
array colors[2] = [0x1f5fbf, 0xd9480f]

# Every series (cost ratio, family, method, gamma) into its own datablock of
# (acceptance, predicted, measured), so that lines join the points of one series only.
series(c, f, m, g) = sprintf('$series_%d_%d_%d_%d', c, f, m, g)
belongs(c, f, m, g) = strcol(setting) eq families[f] && strcol(method) eq methods[m] && \
                      real(strcol(gamma)) == shown_gammas[g] && strcol(cost) eq costs[c]
set datafile separator ","
do for [c = 1:3] for [f = 1:5] for [m = 1:2] for [g = 1:2] {
  eval 'set table ' . series(c, f, m, g)
  plot csv using acceptance:predicted:speedup with table if (belongs(c, f, m, g))
  unset table
}
set datafile separator whitespace

set terminal pngcairo size 1350,860 font "DejaVu Sans,10"
set output png
set multiplot layout 2,3 title "Speedup over standard decoding under the cost model (lines: predicted from the measured acceptance rates; marks: measured)" font ",12"
set grid lc rgb "#dddddd"
set xrange [0.1:1]
set xtics 0.1
set xlabel "acceptance rate of the cheap model's proposals"
set ylabel "speedup over standard"
set key top left Left reverse box opaque font ",8" samplen 2 spacing 1.05

do for [row = 1:2] {
  do for [c = 1:3] {
    set title sprintf("%d models, pass cost cheap : other = %s", row + 1, costs[c])
    if (c == 3) { set key } else { unset key }  # the 1:100 panels have room at the top left
    plot 1 with lines lc rgb "#888888" dt 3 title "standard", \
      for [g = 1:2] for [m = 1:2] for [f = first_family[row]:last_family[row]] \
        series(c, f, m, g) using 1:2 smooth unique with lines lc rgb colors[g] lw 1.6 dt m \
        title (f == first_family[row] ? sprintf("%s, gamma %d, predicted", methods[m], shown_gammas[g]) : ""), \
      for [f = first_family[row]:last_family[row]] for [g = 1:2] \
        series(c, f, 1, g) using 1:3 with points pt filled[f] ps 1.2 lc rgb colors[g] \
        title (g == 1 ? families[f] : ""), \
      for [f = first_family[row]:last_family[row]] for [g = 1:2] \
        series(c, f, 2, g) using 1:3 with points pt open[f] ps 1.2 lc rgb colors[g] notitle, \
      keyentry with points pt 0 title "(marks filled: CoS, open: SD)"
  }
}
unset multiplot
