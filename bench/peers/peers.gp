# The peer chart, drawn by bench/peers/run.sh from report.py's data:
#   gnuplot -e "dat='peers.dat'; png='peers.png'; xmin=0.01; xmax=1000; rows=11; sub='...'" peers.gp
# One row per contender, three bars per row (the workloads), on a log scale: the ratios span
# a GNU parallel job per call to batched pools, four orders of magnitude.
set terminal pngcairo size 1200,860 font "Sans,11" noenhanced
set output png
set title "Ratio to inparallel's C fork per call (ip_call) in the same run, higher is better\n".sub font "Sans,12"
set xlabel "ratio to C fork per call (log scale)"
set logscale x
set xrange [xmin:xmax]
set format x "%gx"
set yrange [rows - 0.4:-0.6]
set ytics scale 0
set grid xtics lc rgb "#dddddd"
set key at graph 0.985, graph 0.93 right top vertical box opaque samplen 2 spacing 1.2
set style fill solid 0.9 noborder
# The floor itself, and the line between calls that fork each time and pools or maps.
set arrow from 1, graph 0 to 1, graph 1 nohead back lc rgb "#888888" dt 2
set arrow from graph 0, first 3.5 to graph 1, first 3.5 nohead back lc rgb "#999999"
set label "a fork per call" at graph 0.99, first -0.35 right font "Sans,10" tc rgb "#666666"
set label "pools and maps" at graph 0.99, first 3.75 right font "Sans,10" tc rgb "#666666"
h = 0.26
label(x) = sprintf(x < 0.1 ? "%.3f" : x < 10 ? "%.2f" : "%.0f", x)
plot dat using (xmin):($1 - h):(xmin):(column(3)):($1 - h - h / 2):($1 - h + h / 2):ytic(2) \
       with boxxyerror lc rgb "#4477aa" title "trivial calls, 2 at once", \
     dat using (xmin):($1):(xmin):(column(4)):($1 - h / 2):($1 + h / 2) \
       with boxxyerror lc rgb "#66ccee" title "trivial calls, 8 at once", \
     dat using (xmin):($1 + h):(xmin):(column(5)):($1 + h - h / 2):($1 + h + h / 2) \
       with boxxyerror lc rgb "#ee6677" title "one 100 MiB result", \
     dat using (column(3) * 1.08):($1 - h):(label(column(3))) \
       with labels left font "Sans,8" notitle, \
     dat using (column(4) * 1.08):($1):(label(column(4))) \
       with labels left font "Sans,8" notitle, \
     dat using (column(5) * 1.08):($1 + h):(label(column(5))) \
       with labels left font "Sans,8" notitle
